"""Roof type (AdV ``Dachform`` code, GeoInfoDok AX_Dachform) from the reconstructed roof planes and cells."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from shapely.geometry import Polygon

FLAT, SHED, OFFSET_SHED, GABLE, HIP, HALF_HIP, MANSARD, PYRAMID, MIXED, OTHER = (
    1000, 2100, 2200, 3100, 3200, 3300, 3400, 3500, 5000, 9999)
ROOF_TYPE_NAMES = {
    FLAT: "flat", SHED: "shed", OFFSET_SHED: "offset shed", GABLE: "gable", HIP: "hip", HALF_HIP: "half-hip",
    MANSARD: "mansard", PYRAMID: "pyramid", MIXED: "mixed", OTHER: "other",
}


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def classify_roof(
    faces: Sequence[tuple[Polygon, float, float, float, float]],
    footprint_area: float,
    *,
    flat_slope_deg: float = 5.0,
    min_share: float = 0.04,
    min_hip_area: float = 0.8,
    angle_tol_deg: float = 25.0,
) -> int:
    """AdV roof type code from roof faces given as (2D cell, slope°, azimuth°, z_min, z_max).

    Flat faces smaller than ``min_share`` of the footprint are ignored (chimneys, noise); sloped faces count from
    ``min_hip_area`` m² (or 1 % of the footprint) so the small hip triangles of half-hip roofs are seen.
    """
    big = [f for f in faces if f[0].area >= min_share * footprint_area]
    sloped = [f for f in faces if f[1] >= flat_slope_deg
              and f[0].area >= max(min_hip_area, 0.01 * footprint_area)]
    if not big and not sloped:
        return OTHER
    flat_area = sum(f[0].area for f in big if f[1] < flat_slope_deg)
    sloped_area = sum(f[0].area for f in sloped)
    if not sloped:
        return FLAT
    if flat_area > 0.25 * (flat_area + sloped_area):
        return MIXED
    az = [f[2] for f in sloped]
    groups: list[list[int]] = []  # faces grouped by facing direction
    for i, a in enumerate(az):
        for g in groups:
            if _angle_diff(az[g[0]], a) < angle_tol_deg:
                g.append(i)
                break
        else:
            groups.append([i])
    if len(groups) == 1:
        return SHED if len(sloped) == 1 else OFFSET_SHED
    if len(groups) == 2 and _angle_diff(az[groups[0][0]], az[groups[1][0]]) > 180 - angle_tol_deg:
        if all(len(g) == 1 for g in groups):
            return GABLE
        slopes = sorted(f[1] for f in sloped)
        return MANSARD if slopes[-1] - slopes[0] > 15 else MIXED
    if len(groups) == 4 and len(sloped) == 4:
        # two opposite pairs at right angles: hip, half-hip or pyramid
        areas = np.array([f[0].area for f in sloped])
        order = np.argsort(areas)
        small, large = order[:2], order[2:]
        if _angle_diff(az[small[0]], az[small[1]]) < 180 - angle_tol_deg:
            return MIXED
        if areas[small].min() > 0.95 * areas[large].max():
            return PYRAMID
        eave_main = min(sloped[i][3] for i in large)
        ridge = max(f[4] for f in sloped)
        eave_hip = min(sloped[i][3] for i in small)
        if eave_hip - eave_main > 0.2 * (ridge - eave_main):
            return HALF_HIP
        return HIP
    return MIXED
