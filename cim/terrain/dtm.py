"""Terrain and surface grids from points: DTM, DSM, nDSM, point density, height above ground.

* DTM: cells holding ground points get their mean height; empty cells (under buildings, water, gaps) are filled
  by linear interpolation on a TIN whose vertices are real ground points -- one per cell on the rim of each gap
  (the one nearest the cell centre). Cells outside the TIN hull stay NaN (nodata): no extrapolation.
* DSM: the highest point per cell; small holes (triangles with edges up to ``fill_max_edge``) are filled on a
  TIN of the highest points of the rim cells.
* nDSM = DSM - DTM, clipped at 0. Density = points per square metre.

All functions take the output ``grid`` separately from the points: pass every point of the tile *including* its
buffer and the core grid; gaps are then interpolated across the tile edge exactly as in a merged cloud.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cim.terrain.fill import fill_small_gaps, rim_cells, tin_fill
from cim.terrain.grid import GridSpec, cell_reduce

__all__ = [
    "GROUND",
    "dtm_grid",
    "dsm_grid",
    "ndsm_grid",
    "density_grid",
    "sample_grid",
    "height_above_ground",
]

GROUND = 2
_NOISE = (7, 18)


def _xyz(points, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) from a PointCloud (optionally masked) or an (n, 3) array; non-finite points dropped."""
    if hasattr(points, "xyz") and hasattr(points, "has"):
        x, y, z = (np.asarray(a, dtype=np.float64) for a in (points.x, points.y, points.z))
    else:
        arr = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        x, y, z = arr[:, 0], arr[:, 1], arr[:, 2]
    if mask is not None:
        x, y, z = x[mask], y[mask], z[mask]
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    if not ok.all():
        x, y, z = x[ok], y[ok], z[ok]
    return x, y, z


def _work_grid(grid: GridSpec, x: np.ndarray, y: np.ndarray) -> GridSpec:
    """The requested grid grown (on its own lattice) to cover the points, so gap rims beyond it are seen."""
    if len(x) == 0:
        return grid
    return grid.subgrid(
        min(grid.xmin, float(x.min())),
        min(grid.ymin, float(y.min())),
        max(grid.xmax, float(x.max()) + grid.resolution * 1e-6),
        max(grid.ymax, float(y.max()) + grid.resolution * 1e-6),
    )


def _crop(values: np.ndarray, work: GridSpec, grid: GridSpec) -> np.ndarray:
    r0, c0, h, w = work.window_of(grid)
    return values[r0 : r0 + h, c0 : c0 + w]


def _representatives(
    work: GridSpec, idx: np.ndarray, x: np.ndarray, y: np.ndarray, key: np.ndarray, cells: np.ndarray
) -> np.ndarray:
    """Index of one point per cell in ``cells`` (flat indices): the point with the smallest ``key``."""
    want = np.zeros(work.width * work.height, dtype=bool)
    want[cells] = True
    sel = np.flatnonzero((idx >= 0) & want[np.maximum(idx, 0)])
    if len(sel) == 0:
        return sel
    order = sel[np.lexsort((key[sel], idx[sel]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = idx[order][1:] != idx[order][:-1]
    return order[first]


def dtm_grid(
    points,
    grid: GridSpec,
    *,
    ground: np.ndarray | None = None,
    max_edge: float | None = None,
    max_boundary_edge: float | None = None,
) -> np.ndarray:
    """The DTM on ``grid`` (NaN = nodata) from ground points.

    ``points`` is a PointCloud (its class-2 points are ground unless ``ground`` gives a mask) or an (n, 3) array
    of ground points. ``max_edge`` leaves cells under longer TIN edges empty (default: fill every interior gap);
    ``max_boundary_edge`` drops the TIN's outermost triangles whose outside edge is longer (CRS units): the slivers
    a convex hull lays over concave data edges.
    """
    if ground is None and hasattr(points, "has"):
        ground = np.asarray(points["classification"]) == GROUND if points.has("classification") else None
        if ground is None:
            raise ValueError("the cloud has no classification; classify ground first or pass ground=")
    x, y, z = _xyz(points, ground)
    if len(x) == 0:
        return np.full(grid.shape, np.nan)
    work = _work_grid(grid, x, y)
    n = work.width * work.height
    idx = work.flat_index(x, y)
    mean = cell_reduce(idx, z, n, "mean").reshape(work.shape)
    valid = np.isfinite(mean)
    mean, valid = fill_small_gaps(mean, valid)
    rim = np.flatnonzero(rim_cells(valid).ravel())
    if len(rim):
        row, col = np.divmod(np.maximum(idx, 0), work.width)
        cx = work.xmin + (col + 0.5) * work.resolution
        cy = work.ymax - (row + 0.5) * work.resolution
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        rep = _representatives(work, idx, x, y, d2, rim)
        mean = tin_fill(work, mean, valid, vertices=(x[rep], y[rep], z[rep]), max_edge=max_edge,
                        max_boundary_edge=max_boundary_edge)
    return _crop(mean, work, grid)


def dsm_grid(
    points,
    grid: GridSpec,
    *,
    mask: np.ndarray | None = None,
    fill_max_edge: float | None = 2.0,
) -> np.ndarray:
    """The DSM on ``grid``: highest point per cell; holes under TIN edges up to ``fill_max_edge`` m filled.

    Noise (classes 7 and 18) is left out when ``points`` is a classified PointCloud. ``fill_max_edge=None``
    or 0 gives the pure maximum-per-cell surface.
    """
    if mask is None and hasattr(points, "has") and points.has("classification"):
        mask = ~np.isin(np.asarray(points["classification"]), _NOISE)
    x, y, z = _xyz(points, mask)
    if len(x) == 0:
        return np.full(grid.shape, np.nan)
    if not fill_max_edge:
        return cell_reduce(grid.flat_index(x, y), z, grid.width * grid.height, "max").reshape(grid.shape)
    work = _work_grid(grid, x, y)
    idx = work.flat_index(x, y)
    top = cell_reduce(idx, z, work.width * work.height, "max").reshape(work.shape)
    valid = np.isfinite(top)
    rim = np.flatnonzero(rim_cells(valid).ravel())
    if len(rim):
        rep = _representatives(work, idx, x, y, -z, rim)
        top = tin_fill(work, top, valid, vertices=(x[rep], y[rep], z[rep]), max_edge=fill_max_edge)
    return _crop(top, work, grid)


def ndsm_grid(dsm: np.ndarray, dtm: np.ndarray) -> np.ndarray:
    """DSM - DTM, clipped at 0 (NaN where either is NaN)."""
    with np.errstate(invalid="ignore"):
        return np.maximum(np.asarray(dsm) - np.asarray(dtm), 0.0)


def density_grid(points, grid: GridSpec, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Points per square metre in each cell (0 where empty); noise excluded for classified clouds."""
    if mask is None and hasattr(points, "has") and points.has("classification"):
        mask = ~np.isin(np.asarray(points["classification"]), _NOISE)
    x, y, _ = _xyz(points, mask)
    counts = cell_reduce(grid.flat_index(x, y), None, grid.width * grid.height, "count")
    return (counts / grid.resolution**2).reshape(grid.shape)


def sample_grid(values: np.ndarray, grid: GridSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of a grid at points (cell values sit at cell centres); NaN cells are nearest-filled first,
    points outside the grid take the nearest edge value."""
    from cim.terrain.fill import nearest_fill

    vals = nearest_fill(values)
    rows = (grid.ymax - np.asarray(y, dtype=np.float64)) / grid.resolution - 0.5
    cols = (np.asarray(x, dtype=np.float64) - grid.xmin) / grid.resolution - 0.5
    return ndimage.map_coordinates(vals, [rows, cols], order=1, mode="nearest")


def height_above_ground(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, dtm: np.ndarray, grid: GridSpec
) -> np.ndarray:
    """Height of each point above the DTM (bilinear); NaN when the DTM has no value at all."""
    if not np.isfinite(dtm).any():
        return np.full(len(np.asarray(x)), np.nan)
    return np.asarray(z, dtype=np.float64) - sample_grid(dtm, grid, x, y)
