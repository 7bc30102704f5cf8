"""Noise: low points below the terrain (class 7), isolated points (7 below / 18 above their surroundings).

* :func:`low_noise` -- points clearly below their surroundings (multipath, reflections through glass), which
  would otherwise drag a ground filter's minimum surface down. Grid based: a point is low noise when it lies
  more than ``threshold`` below the k-th lowest cell minimum of its ``window`` x ``window`` cell neighbourhood
  (k = ``rank``, so clusters of up to k - 1 low cells are still caught). Repeated ``iterations`` times.
* :func:`isolated_points` -- fewer than ``min_neighbors`` other points within ``radius`` (3D). Purely local,
  so it gives the same answer in a buffered tile as in the merged cloud.
* :func:`statistical_outliers` -- PDAL/PCL style: mean distance to the ``k`` nearest neighbours above
  mean + ``multiplier`` x std. The mean and std are taken over the cloud given (per tile), so it is not seam-free;
  offered for compatibility, not on by default.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from cim.terrain.grid import GridSpec, cell_reduce, finite_points

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
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of low-noise points (see module doc); only ``candidates`` (default all finite) are considered.

    A point that is low against its neighbourhood is noise only if it is also isolated: fewer than
    ``min_neighbors`` other candidates within ``radius`` (3D). Real ground under dense canopy is low against the
    vegetation around it but has ground neighbours; a multipath return has none.
    """
    x, y, z, keep = finite_points(x, y, z, candidates)
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
        pts = np.column_stack([x[live], y[live], z[live]])
        origin = pts.min(axis=0)
        tree = cKDTree(pts - origin)
        q = np.column_stack([x[low], y[low], z[low]]) - origin
        counts = np.asarray(tree.query_ball_point(q, r=radius, return_length=True)) - 1
        new = low[counts < min_neighbors]
        if len(new) == 0:
            break
        noise[new] = True
    return noise


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
    d, _ = tree.query(pts, k=k, distance_upper_bound=radius, workers=-1)
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
    d, _ = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    mean = d[:, 1:].mean(axis=1)
    out[ok] = mean > mean.mean() + multiplier * mean.std()
    return out
