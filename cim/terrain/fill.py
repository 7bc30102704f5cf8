"""Filling empty raster cells: linear TIN interpolation across gaps, nearest-cell extrapolation.

Only the valid cells that border a gap become TIN vertices (a gap's linear fill depends only on its rim), which
keeps the Delaunay triangulation small: a 1000 x 1000 grid with a few buildings triangulates thousands of
vertices, not a million.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import QhullError

from cim.terrain.grid import GridSpec

__all__ = ["rim_cells", "tin_fill", "nearest_fill"]

_EIGHT = np.ones((3, 3), dtype=bool)


def rim_cells(valid: np.ndarray) -> np.ndarray:
    """Valid cells with at least one empty 8-neighbour inside the grid (the grid border does not count as empty)."""
    empty = ~valid
    near_empty = ndimage.binary_dilation(empty, structure=_EIGHT, border_value=0)
    return valid & near_empty


def tin_fill(
    grid: GridSpec,
    values: np.ndarray,
    valid: np.ndarray | None = None,
    vertices: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    max_edge: float | None = None,
) -> np.ndarray:
    """Fill empty cells by linear interpolation on a TIN; cells outside the TIN's hull stay NaN.

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
        vx = grid.xmin + (cc + 0.5) * grid.resolution
        vy = grid.ymax - (rr + 0.5) * grid.resolution
        vz = out[rr, cc]
    else:
        vx, vy, vz = (np.asarray(a, dtype=np.float64) for a in vertices)
    if len(vx) < 3:
        return out
    er, ec = np.nonzero(empty)
    qx = grid.xmin + (ec + 0.5) * grid.resolution
    qy = grid.ymax - (er + 0.5) * grid.resolution
    # work in coordinates relative to the grid corner: small numbers, same result for every tile of the grid
    ox, oy = grid.xmin, grid.ymax
    pts = np.column_stack([vx - ox, vy - oy])
    try:
        interp = LinearNDInterpolator(pts, vz)
    except (QhullError, ValueError):
        return out  # all vertices collinear: no area to interpolate over
    q = np.column_stack([qx - ox, qy - oy])
    z = interp(q)
    if max_edge is not None and np.isfinite(z).any():
        tri = interp.tri
        simplex = tri.find_simplex(q)
        ok = simplex >= 0
        verts = tri.points[tri.simplices[simplex[ok]]]
        edges = np.stack(
            [
                np.hypot(*(verts[:, 0] - verts[:, 1]).T),
                np.hypot(*(verts[:, 1] - verts[:, 2]).T),
                np.hypot(*(verts[:, 2] - verts[:, 0]).T),
            ]
        ).max(axis=0)
        too_long = np.zeros(len(q), dtype=bool)
        too_long[np.nonzero(ok)[0][edges > max_edge]] = True
        z[too_long] = np.nan
    out[er, ec] = z
    return out


def nearest_fill(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Give every empty cell the value of the nearest valid cell (Euclidean in cells)."""
    values = np.asarray(values, dtype=np.float64)
    if valid is None:
        valid = np.isfinite(values)
    if valid.all() or not valid.any():
        return values.copy()
    _, (ri, ci) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return values[ri, ci]
