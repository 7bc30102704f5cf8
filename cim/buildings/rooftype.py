"""Roof type (AdV ``Dachform`` code, GeoInfoDok AX_Dachform) from the reconstructed roof planes and cells."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

FLAT, SHED, OFFSET_SHED, GABLE, HIP, HALF_HIP, MANSARD, PYRAMID, MIXED, OTHER = (
    1000, 2100, 2200, 3100, 3200, 3300, 3400, 3500, 5000, 9999)
CONE, DOME, SAWTOOTH, BARREL, TOWER = 3600, 3700, 3800, 3900, 4000
ROOF_TYPE_NAMES = {
    FLAT: "flat", SHED: "shed", OFFSET_SHED: "offset shed", GABLE: "gable", HIP: "hip", HALF_HIP: "half-hip",
    MANSARD: "mansard", PYRAMID: "pyramid", CONE: "cone", DOME: "dome", SAWTOOTH: "sawtooth", BARREL: "barrel",
    TOWER: "tower", MIXED: "mixed", OTHER: "other",
}
RIDGE, HIP_EDGE, VALLEY, STEP = "ridge", "hip", "valley", "step"


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


def roof_edges(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]], *,
               min_length: float = 0.5, step: float = 0.3, horizontal_deg: float = 5.0, cell: float = 0.5
               ) -> list[tuple[int, int, str, float]]:
    """The edges between roof cells of different planes: (cell i, cell j, kind, length in plan); kind is
    ``ridge`` (horizontal, convex), ``hip`` (sloped, convex), ``valley`` (concave) or ``step`` (the roofs do
    not meet: a vertical wall between them)."""
    out = []
    polys = [c for c, _ in cells]
    tree = shapely.STRtree(polys)
    for i, j in zip(*tree.query(polys, predicate="touches")):
        if i >= j or cells[i][1] == cells[j][1]:
            continue
        shared = shapely.line_merge(shapely.intersection(polys[i].boundary, polys[j].boundary))
        lines = [g for g in shapely.get_parts(shared) if isinstance(g, LineString)]
        if not lines:
            continue
        line = max(lines, key=lambda g: g.length)
        if line.length < min_length:
            continue
        p, q = np.asarray(line.coords)[[0, -1]]
        xy = np.asarray([line.interpolate(t, normalized=True).coords[0] for t in np.linspace(0, 1, 7)])
        ci, cj = np.asarray(coefficients[i]), np.asarray(coefficients[j])
        zi, zj = xy @ ci[:2] + ci[2], xy @ cj[:2] + cj[2]
        # a partition edge lies up to ``cell`` off the planes' intersection: allow for the height that makes
        if np.median(np.abs(zi - zj)) > step + cell * float(np.hypot(*(ci[:2] - cj[:2]))):
            out.append((int(i), int(j), STEP, line.length))
            continue
        # convex (ridge, hip) when plane i is the lower one over cell i near the edge (roof = min of the two)
        near = shapely.intersection(polys[i], line.buffer(2.0))
        probe = np.asarray(near.centroid.coords[0]) if not near.is_empty else xy[3]
        convex = probe @ ci[:2] + ci[2] <= probe @ cj[:2] + cj[2]
        rise = abs(zi[-1] - zi[0]) / max(np.hypot(*(q - p)), 1e-9)
        kind = (RIDGE if rise <= np.tan(np.radians(horizontal_deg)) else HIP_EDGE) if convex else VALLEY
        out.append((int(i), int(j), kind, line.length))
    return out


def cross_gable(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]],
                footprint_area: float, *, flat_slope_deg: float = 5.0, min_share: float = 0.04,
                max_other: float = 0.3) -> bool:
    """Whether a roof is a gable roof of several wings (L, T, U plans): sloped cells only (flat ones below
    ``min_share`` of the footprint aside), joined by horizontal ridges and by valleys, not by hips or steps."""
    slope = [np.degrees(np.arctan(np.hypot(a, b))) for a, b, _ in coefficients]
    big = [k for k, (c, lab) in enumerate(cells) if c.area >= min_share * footprint_area and lab >= 0]  # no nodata
    if any(slope[k] < flat_slope_deg for k in big) or len(big) < 2:
        return False
    length = dict.fromkeys((RIDGE, HIP_EDGE, VALLEY, STEP), 0.0)
    for i, j, kind, n in roof_edges(cells, coefficients):
        if i in big and j in big:
            length[kind] += n
    # hips and steps shorter than ``max_other`` of the ridges and valleys are partition noise
    return length[RIDGE] > 0 and length[HIP_EDGE] + length[STEP] <= max_other * (length[RIDGE] + length[VALLEY])
