"""Noise: low points below the terrain (class 7), isolated points (7 below / 18 above their surroundings).

* :func:`low_noise` -- points clearly below their surroundings (multipath, reflections through glass), which
  would otherwise drag a ground filter's minimum surface down. Grid based: a point is low noise when it lies
  more than ``threshold`` below the k-th lowest cell minimum of its ``window`` x ``window`` cell neighbourhood
  (k = ``rank``, so clusters of up to k - 1 low cells are still caught) *and* it is isolated in 3D: fewer
  neighbours within ``radius`` than ``min_neighbors`` or than ``min_share`` of the points in the vertical
  cylinder of that radius around it. A cluster of multipath returns has its own few neighbours, while the
  surface above it fills the cylinder; ground in a real depression has its surroundings in its ball.
  Repeated ``iterations`` times.
* :func:`isolated_points` -- fewer than ``min_neighbors`` other points within ``radius`` (3D). Purely local,
  so it gives the same answer in a buffered tile as in the merged cloud.
* :func:`statistical_outliers` -- PDAL/PCL style: mean distance to the ``k`` nearest neighbours above
  mean + ``multiplier`` x std. The mean and std are taken over the cloud given (per tile), so it is not seam-free;
  offered for compatibility, not on by default.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from cim.terrain.grid import GridSpec, cell_reduce, finite_points
from cim.threads import task_threads

__all__ = ["low_noise", "isolated_points", "statistical_outliers", "LOW_NOISE", "HIGH_NOISE"]

LOW_NOISE = 7
HIGH_NOISE = 18


def low_noise(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    cell: float = 1.0,
    window: int = 5,
    rank: int = 4,
    threshold: float = 1.5,
    iterations: int = 2,
    radius: float = 5.0,
    min_neighbors: int = 2,
    min_share: float = 0.1,
    candidates: np.ndarray | None = None,
    unit: float = 1.0,
) -> np.ndarray:
    """Mask of low-noise points (see module doc); only ``candidates`` (default all finite) are considered.
    ``cell``, ``threshold`` and ``radius`` are in metres; ``unit`` is metres per coordinate unit.

    A point that is low against its neighbourhood is noise only if it is also isolated: fewer other candidates
    within ``radius`` (3D) than ``min_neighbors`` and than ``min_share`` x the candidates within ``radius`` in plan
    (the vertical cylinder). Real ground under dense canopy is low against the vegetation around it but has
    ground neighbours; multipath returns have none, or only each other while the surface above fills the
    cylinder.
    """
    x, y, z, keep = finite_points(x, y, z, candidates)
    cell, threshold, radius = cell / unit, threshold / unit, radius / unit
    noise = np.zeros(len(x), dtype=bool)
    if keep.sum() < rank + 1:
        return noise
    grid = GridSpec.from_points(x[keep], y[keep], cell)
    idx = grid.flat_index(x, y)
    ncell = grid.width * grid.height
    for _ in range(iterations):
        live = keep & ~noise & (idx >= 0)
        zmin = cell_reduce(np.where(live, idx, -1), z, ncell, "min").reshape(grid.shape)
        ranked = np.where(np.isfinite(zmin), zmin, np.inf)
        ref = ndimage.rank_filter(ranked, rank - 1, size=window, mode="constant", cval=np.inf)
        ref_at = ref.ravel()[np.maximum(idx, 0)]
        low = np.flatnonzero(live & np.isfinite(ref_at) & (z < ref_at - threshold))
        if len(low) == 0:
            break
        near = live & _near_cells(grid, idx[low], radius)[np.maximum(idx, 0)]  # only points that can be neighbours
        pts = np.column_stack([x[near], y[near], z[near]])
        origin = pts.min(axis=0)
        q = np.column_stack([x[low], y[low], z[low]]) - origin
        ball = _neighbour_counts(pts - origin, q, radius)
        cylinder = _neighbour_counts(pts[:, :2] - origin[:2], q[:, :2], radius)
        new = low[ball < np.maximum(min_neighbors, min_share * cylinder)]
        if len(new) == 0:
            break
        noise[new] = True
    return noise


def _near_cells(grid: GridSpec, cells: np.ndarray, radius: float) -> np.ndarray:
    """Flat mask of the cells within ``radius`` (square neighbourhood) of the given flat cell indices."""
    mask = np.zeros(grid.width * grid.height, dtype=bool)
    mask[cells] = True
    reach = 2 * math.ceil(radius / grid.resolution) + 1
    return ndimage.maximum_filter(mask.reshape(grid.shape), size=reach, mode="constant").ravel()


def _neighbour_counts(points: np.ndarray, queries: np.ndarray, radius: float) -> np.ndarray:
    """Other points within ``radius`` of each query point (the query points are among ``points``)."""
    counts = cKDTree(points).query_ball_point(queries, r=radius, return_length=True)
    return np.asarray(counts) - 1


def isolated_points(xyz: np.ndarray, *, radius: float = 2.0, min_neighbors: int = 2) -> np.ndarray:
    """Mask of points with fewer than ``min_neighbors`` other points within ``radius`` (3D)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    out = np.zeros(len(xyz), dtype=bool)
    ok = np.isfinite(xyz).all(axis=1)
    if ok.sum() == 0:
        return out
    pts = xyz[ok] - xyz[ok].min(axis=0)
    tree = cKDTree(pts)
    # k = min_neighbors + 1 nearest (self included): isolated if the last one is farther than radius
    k = min(min_neighbors + 1, len(pts))
    d, _ = tree.query(pts, k=k, distance_upper_bound=radius, workers=task_threads())
    d = d.reshape(len(pts), -1)
    out[ok] = ~np.isfinite(d[:, -1]) if k == min_neighbors + 1 else True
    return out


def statistical_outliers(xyz: np.ndarray, *, k: int = 8, multiplier: float = 2.0) -> np.ndarray:
    """Mask of statistical outliers (mean kNN distance > mean + multiplier * std over this cloud)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    out = np.zeros(len(xyz), dtype=bool)
    ok = np.isfinite(xyz).all(axis=1)
    if ok.sum() <= k:
        return out
    pts = xyz[ok] - xyz[ok].min(axis=0)
    d, _ = cKDTree(pts).query(pts, k=k + 1, workers=task_threads())
    mean = d[:, 1:].mean(axis=1)
    out[ok] = mean > mean.mean() + multiplier * mean.std()
    return out
