"""Filling empty raster cells: linear TIN interpolation across gaps, nearest-cell extrapolation.

Only the valid cells that border a gap become TIN vertices (a gap's linear fill depends only on its rim), which
keeps the Delaunay triangulation small: a 1000 x 1000 grid with a few buildings triangulates thousands of
vertices, not a million.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay, QhullError

from cim.terrain.grid import GridSpec

__all__ = ["rim_cells", "fill_small_gaps", "tin_fill", "rasterize_tin", "nearest_fill"]

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

    ``max_boundary_edge`` drops the triangles on the TIN's outer boundary whose boundary edge is longer (the
    slivers a convex hull lays over concave data edges; one layer, so interior gaps are filled whatever their size).

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
    # work in cell units relative to the grid corner: cell (row r, col c) has its centre at (u, v) = (c, r)
    u = (vx - grid.xmin) / grid.resolution - 0.5
    v = (grid.ymax - vy) / grid.resolution - 0.5
    try:
        dela = Delaunay(np.column_stack([u, v]))
    except (QhullError, ValueError):
        return out  # all vertices collinear: no area to interpolate over
    tris = dela.simplices
    drop = np.zeros(len(tris), dtype=bool)
    if max_edge is not None or max_boundary_edge is not None:
        edges = _edge_lengths(u, v, tris) * grid.resolution
        if max_edge is not None:
            drop |= edges.max(axis=1) > max_edge
        if max_boundary_edge is not None:
            drop |= ((dela.neighbors < 0) & (edges > max_boundary_edge)).any(axis=1)
    filled = rasterize_tin(u, v, vz, tris[~drop], empty)
    out[empty] = filled[empty]
    return out


def _edge_lengths(u: np.ndarray, v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(n, 3) lengths of the edges opposite each corner (scipy's ``neighbors`` order)."""
    a, b = np.roll(tris, -1, axis=1), np.roll(tris, -2, axis=1)
    return np.hypot(u[a] - u[b], v[a] - v[b])


def rasterize_tin(
    u: np.ndarray, v: np.ndarray, z: np.ndarray, tris: np.ndarray, target: np.ndarray, chunk: int = 4_000_000
) -> np.ndarray:
    """Linear interpolation of a TIN at the centres of the ``target`` cells it covers (NaN elsewhere).

    Vertices are in cell units (cell (r, c) has its centre at u = c, v = r). Each triangle visits the cell
    centres in its bounding box, in vectorised chunks, and keeps those inside it (barycentric test): no point
    location structure, work linear in the covered area.
    """
    height, width = target.shape
    out = np.full(target.shape, np.nan)
    if len(tris) == 0:
        return out
    ua, ub, uc = u[tris[:, 0]], u[tris[:, 1]], u[tris[:, 2]]
    va, vb, vc = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    c0 = np.maximum(np.ceil(np.minimum(np.minimum(ua, ub), uc)), 0).astype(np.int64)
    c1 = np.minimum(np.floor(np.maximum(np.maximum(ua, ub), uc)), width - 1).astype(np.int64)
    r0 = np.maximum(np.ceil(np.minimum(np.minimum(va, vb), vc)), 0).astype(np.int64)
    r1 = np.minimum(np.floor(np.maximum(np.maximum(va, vb), vc)), height - 1).astype(np.int64)
    w = np.maximum(c1 - c0 + 1, 0)
    count = w * np.maximum(r1 - r0 + 1, 0)
    det = (vb - vc) * (ua - uc) + (uc - ub) * (va - vc)
    idx = np.flatnonzero((count > 0) & (np.abs(det) > 1e-12))
    flat_target = target.ravel()
    flat_out = out.ravel()
    ends = np.cumsum(count[idx])
    start = 0
    while start < len(idx):
        base = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, base + chunk, side="right")), start + 1)
        t = idx[start:stop]
        n = count[t]
        rep = np.repeat(np.arange(len(t)), n)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        cc = c0[t][rep] + k % w[t][rep]
        rr = r0[t][rep] + k // w[t][rep]
        cell = rr * width + cc
        keep = flat_target[cell]
        ti, cc, rr, cell = t[rep[keep]], cc[keep], rr[keep], cell[keep]
        l1 = ((vb[ti] - vc[ti]) * (cc - uc[ti]) + (uc[ti] - ub[ti]) * (rr - vc[ti])) / det[ti]
        l2 = ((vc[ti] - va[ti]) * (cc - uc[ti]) + (ua[ti] - uc[ti]) * (rr - vc[ti])) / det[ti]
        l3 = 1.0 - l1 - l2
        inside = (l1 >= -1e-9) & (l2 >= -1e-9) & (l3 >= -1e-9)
        ti = ti[inside]
        flat_out[cell[inside]] = (
            l1[inside] * z[tris[ti, 0]] + l2[inside] * z[tris[ti, 1]] + l3[inside] * z[tris[ti, 2]]
        )
        start = stop
    return out


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
