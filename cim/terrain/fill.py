"""Filling empty raster cells: linear TIN interpolation across gaps, nearest-cell extrapolation.

Only the valid cells that border a gap become TIN vertices (a gap's linear fill depends only on its rim), which
keeps the Delaunay triangulation small: a 1000 x 1000 grid with a few buildings triangulates thousands of
vertices, not a million.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
import matplotlib.tri as mtri
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import Delaunay, QhullError

from cim.terrain.grid import GridSpec

__all__ = ["rim_cells", "fill_small_gaps", "tin_fill", "nearest_fill"]

_EIGHT = np.ones((3, 3), dtype=bool)


def rim_cells(valid: np.ndarray) -> np.ndarray:
    """Valid cells with at least one empty 8-neighbour inside the grid (the grid border does not count as empty)."""
    empty = ~valid
    near_empty = ndimage.binary_dilation(empty, structure=_EIGHT, border_value=0)
    return valid & near_empty


def fill_small_gaps(values: np.ndarray, valid: np.ndarray, max_cells: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fill gaps of at most ``max_cells`` cells (8-connected) with the distance-weighted mean of their valid
    8-neighbours; returns (values, valid). Purely local, so tiles agree with the merged cloud; the TIN then only
    needs the rims of the larger gaps (buildings, water), which keeps it small."""
    empty = ~valid
    if not empty.any() or max_cells <= 0:
        return values, valid
    labels, n = ndimage.label(empty, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = (sizes <= max_cells) & (np.arange(n + 1) > 0)
    target = small[labels]
    if not target.any():
        return values, valid
    w = np.array([[0.7071, 1.0, 0.7071], [1.0, 0.0, 1.0], [0.7071, 1.0, 0.7071]])
    v = np.where(valid, values, 0.0)
    num = ndimage.correlate(v, w, mode="constant", cval=0.0)
    den = ndimage.correlate(valid.astype(np.float64), w, mode="constant", cval=0.0)
    ok = target & (den > 0)
    out = values.copy()
    out[ok] = num[ok] / den[ok]
    return out, valid | ok


def tin_fill(
    grid: GridSpec,
    values: np.ndarray,
    valid: np.ndarray | None = None,
    vertices: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    max_edge: float | None = None,
    max_boundary_edge: float | None = None,
) -> np.ndarray:
    """Fill empty cells by linear interpolation on a TIN; cells outside the TIN's hull stay NaN.

    ``max_boundary_edge`` drops the triangles on the TIN's outer boundary whose boundary edge is longer: the
    slivers a convex hull lays over concave data edges (one layer, so interior gaps are filled whatever their size).

    ``values`` is (height, width); ``valid`` defaults to its finite cells. ``vertices`` (x, y, z arrays) replaces
    the default vertices (centres of the rim cells) -- e.g. real ground points, which avoid the co-circular
    lattice ties that make a Delaunay triangulation of cell centres ambiguous. With ``max_edge`` the cells whose
    triangle has an edge longer than that stay NaN.
    """
    out = np.array(values, dtype=np.float64, copy=True)
    if valid is None:
        valid = np.isfinite(out)
    empty = ~valid
    if not empty.any():
        return out
    if vertices is None:
        rim = rim_cells(valid)
        rr, cc = np.nonzero(rim)
        jx, jy = _jitter(grid, rr, cc)
        vx = grid.xmin + (cc + 0.5 + jx) * grid.resolution
        vy = grid.ymax - (rr + 0.5 + jy) * grid.resolution
        vz = out[rr, cc]
    else:
        vx, vy, vz = (np.asarray(a, dtype=np.float64) for a in vertices)
    if len(vx) < 3:
        return out
    er, ec = np.nonzero(empty)
    qx = grid.xmin + (ec + 0.5) * grid.resolution
    qy = grid.ymax - (er + 0.5) * grid.resolution
    # work in coordinates relative to the grid corner: small numbers, same result for every tile of the grid
    px, py = vx - grid.xmin, vy - grid.ymax
    try:
        simplices = Delaunay(np.column_stack([px, py])).simplices
    except (QhullError, ValueError):
        return out  # all vertices collinear: no area to interpolate over
    # point location with matplotlib's trapezoid map: O(log n) per query, where scipy's walk degrades badly
    tri = mtri.Triangulation(px, py, simplices)
    t = tri.triangles
    area2 = (px[t[:, 1]] - px[t[:, 0]]) * (py[t[:, 2]] - py[t[:, 0]]) - (px[t[:, 2]] - px[t[:, 0]]) * (
        py[t[:, 1]] - py[t[:, 0]]
    )
    mask = np.abs(area2) < 1e-9 * grid.resolution**2  # flat triangles Qhull may leave on collinear rims
    if max_boundary_edge is not None:
        mask |= _peel(px, py, t, tri.neighbors, max_boundary_edge)
    if mask.any():
        tri.set_mask(mask)
    qx, qy = qx - grid.xmin, qy - grid.ymax
    try:
        z = np.ma.filled(mtri.LinearTriInterpolator(tri, vz)(qx, qy).astype(np.float64), np.nan)
        locate = tri.get_trifinder()
        corners_of = tri.triangles
    except RuntimeError:  # matplotlib refuses the triangulation: slower but robust scipy point location
        dela = Delaunay(np.column_stack([px, py]))
        z = LinearNDInterpolator(dela, vz)(np.column_stack([qx, qy]))
        locate = lambda qx_, qy_: dela.find_simplex(np.column_stack([qx_, qy_]))  # noqa: E731
        corners_of = dela.simplices
    if max_edge is not None and np.isfinite(z).any():
        t = locate(qx, qy)
        ok = t >= 0
        corners = corners_of[t[ok]]
        ex, ey = px[corners], py[corners]
        edges = np.max(
            [np.hypot(ex[:, i] - ex[:, (i + 1) % 3], ey[:, i] - ey[:, (i + 1) % 3]) for i in range(3)], axis=0
        )
        bad = np.flatnonzero(ok)[edges > max_edge]
        z[bad] = np.nan
    out[er, ec] = z
    return out


def _peel(px: np.ndarray, py: np.ndarray, simplices: np.ndarray, neighbors: np.ndarray, limit: float) -> np.ndarray:
    """Mask of the boundary triangles with a long boundary edge (see :func:`tin_fill`)."""
    # edge e of triangle t joins corners e and (e + 1) % 3; matplotlib's neighbors[t, e] is across that edge
    a = simplices
    b = np.roll(simplices, -1, axis=1)
    long_edge = np.hypot(px[a] - px[b], py[a] - py[b]) > limit
    return ((neighbors < 0) & long_edge).any(axis=1)


def _jitter(grid: GridSpec, rr: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tiny deterministic offset (< 1 % of a cell) per *global* cell: breaks the co-circular ties of a regular
    lattice (which make Delaunay ambiguous and point location slow) identically in every tile."""
    gc = np.round(grid.xmin / grid.resolution).astype(np.int64) + cc
    gr = np.round(grid.ymax / grid.resolution).astype(np.int64) - rr
    h1 = (gc * 73856093) ^ (gr * 19349663)
    h2 = (gc * 83492791) ^ (gr * 2654435761)
    return (h1 % 1009) / 1009.0 * 0.01 - 0.005, (h2 % 1013) / 1013.0 * 0.01 - 0.005


def nearest_fill(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Give every empty cell the value of the nearest valid cell (Euclidean in cells)."""
    values = np.asarray(values, dtype=np.float64)
    if valid is None:
        valid = np.isfinite(values)
    if valid.all() or not valid.any():
        return values.copy()
    _, (ri, ci) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return values[ri, ci]
