"""Partition a footprint into roof-plane cells.

A raster over the footprint decides, cell by cell, which plane forms the roof there:
  * a plane may only claim cells within ``max_extension`` of its own inlier points: no roof plane is ever
    extended over an area without points further than this tolerance (the roofer #172 failure);
  * with ``nearest`` (the buildings' default, on a 0.25 m raster): a cell takes the plane that its nearest inlier
    points in plan vote for (weighted by inverse distance): the edge between two planes lies between their point
    sets, also where most cells hold no point (narrow eaves and step strips);
  * otherwise a cell with points takes the candidate plane closest to the cells' observed median height, and a cell
    without points the lowest candidate (lower envelope: conservative, right for gable/hip roofs);
  * a cell with no candidate gets the ``nodata`` label (a flat, low roof; reported as lower coverage);
  * a cell centred outside the footprint takes the label of the nearest cell inside (its sliver inside the
    outline belongs to that roof, not to the lowest plane within reach).
The label raster is mode-filtered (where the points do not contradict the majority), vectorised, simplified as a
coverage (shared edges stay shared), clipped to the exact footprint, small pieces are merged into their
neighbours, and vertices shared by sloped cells are moved onto the planes' intersection lines (exact ridges and
hips).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import shapely
from affine import Affine
from scipy import ndimage
from scipy.spatial import cKDTree
from shapely.geometry import Polygon

from cim.buildings.planes import Plane

NODATA = -1
_DUST = 1e-6  # pieces smaller than this (m², numerical slivers of the overlay) are dropped


def label_raster(
    footprint: Polygon,
    xyz: np.ndarray,
    labels: np.ndarray,
    planes: Sequence[Plane],
    *,
    cell: float = 0.5,
    max_extension: float = 2.0,
    mode_filter: int = 2,
    keep_misfit: float = 0.5,
    nearest: int = 0,
) -> tuple[np.ndarray, Affine, np.ndarray]:
    """(label raster, its transform, inside-footprint mask); labels index ``planes`` or are NODATA. The majority
    filter never gives a cell with points a plane more than ``keep_misfit`` farther from their median height than
    its own plane (narrow pieces the points show – eaves strips, step pieces – survive it). With ``nearest`` > 0 a
    cell takes the plane its ``nearest`` nearest inliers vote for, where any lies within ``max_extension``."""
    minx, miny, maxx, maxy = footprint.bounds
    pad = 2 * cell
    x0 = np.floor((minx - pad) / cell) * cell
    y1 = np.ceil((maxy + pad) / cell) * cell
    w = int(np.ceil((maxx + pad - x0) / cell))
    h = int(np.ceil((y1 - (miny - pad)) / cell))
    transform = Affine(cell, 0, x0, 0, -cell, y1)
    cx = x0 + (np.arange(w) + 0.5) * cell
    cy = y1 - (np.arange(h) + 0.5) * cell
    gx, gy = np.meshgrid(cx, cy)
    inside = shapely.contains_xy(footprint, gx, gy)
    col = np.clip(((xyz[:, 0] - x0) / cell).astype(np.int64), 0, w - 1)
    row = np.clip(((y1 - xyz[:, 1]) / cell).astype(np.int64), 0, h - 1)
    flat = row * w + col
    # observed median height per cell
    zobs = np.full(h * w, np.nan)
    if len(xyz):
        order = np.lexsort((xyz[:, 2], flat))
        f, z = flat[order], xyz[order, 2]
        starts = np.r_[0, np.nonzero(np.diff(f))[0] + 1]
        ends = np.r_[starts[1:], len(f)]
        zobs[f[starts]] = z[(starts + ends - 1) // 2]
    zobs = zobs.reshape(h, w)
    k = len(planes)
    out = np.full((h, w), NODATA, dtype=np.int64)
    if k == 0:
        return out, transform, inside
    zk = np.stack([p.z(gx, gy) for p in planes])
    reach = np.zeros((k, h, w), dtype=bool)
    for i in range(k):
        support = np.zeros(h * w, dtype=bool)
        support[flat[labels == i]] = True
        dist = ndimage.distance_transform_edt(~support.reshape(h, w)) * cell
        reach[i] = dist <= max_extension
    has_obs = np.isfinite(zobs)
    cost = np.where(has_obs[None], np.abs(zk - np.where(has_obs, zobs, 0)[None]), zk)
    cost = np.where(reach, cost, np.inf)
    best = np.argmin(cost, axis=0)
    out = np.where(np.isfinite(cost.min(axis=0)), best, NODATA)
    if nearest:
        out = _nearest_labels(gx, gy, xyz, labels, k, nearest, max_extension, cell, out)
    if inside.any():  # cells centred outside the footprint (clipped to slivers later) take their inside neighbour's
        _, (ri, ci) = ndimage.distance_transform_edt(~inside, return_indices=True)
        out = out[ri, ci]
    zdiff = np.where(has_obs[None], np.abs(zk - np.where(has_obs, zobs, 0)[None]), 0.0)

    def misfit(lab: np.ndarray) -> np.ndarray:  # a cell's plane height off its observed median (inf: nodata)
        return np.where(lab >= 0, np.take_along_axis(zdiff, np.maximum(lab, 0)[None], axis=0)[0], np.inf)

    out = _mode_filter(out, inside, mode_filter, misfit, keep_misfit)
    return out, transform, inside


def _nearest_labels(gx: np.ndarray, gy: np.ndarray, xyz: np.ndarray, labels: np.ndarray, n_planes: int, k: int,
                    max_extension: float, cell: float, fallback: np.ndarray) -> np.ndarray:
    """Each cell's label by a vote of its ``k`` nearest plane inliers in plan (weighted by inverse distance);
    ``fallback`` where no inlier lies within ``max_extension``."""
    own = np.flatnonzero(labels >= 0)
    if not len(own):
        return fallback
    d, j = cKDTree(xyz[own, :2]).query(np.column_stack([gx.ravel(), gy.ravel()]), k=min(k, len(own)),
                                       distance_upper_bound=max_extension)
    d, j = d.reshape(len(d), -1), j.reshape(len(j), -1)
    ok = np.isfinite(d)
    votes = labels[own[np.where(ok, j, 0)]]
    score = np.zeros((len(d), n_planes))
    rows = np.repeat(np.arange(len(d)), d.shape[1])
    np.add.at(score, (rows, votes.ravel()), np.where(ok, 1 / (d + cell), 0).ravel())
    return np.where(ok.any(axis=1), np.argmax(score, axis=1), fallback.ravel()).reshape(gx.shape)


def _mode_filter(labels: np.ndarray, inside: np.ndarray, iterations: int,
                 misfit: Callable[[np.ndarray], np.ndarray], tolerance: float) -> np.ndarray:
    """3x3 majority filter (ties keep the centre label), applied inside the footprint only, where the new label's
    ``misfit`` exceeds the current one's by at most ``tolerance``."""
    vals = np.unique(labels)
    if len(vals) < 2:
        return labels
    for _ in range(iterations):
        counts = np.stack([ndimage.uniform_filter((labels == v).astype(np.float32), size=3, mode="nearest")
                           for v in vals])
        centre = np.stack([labels == v for v in vals])
        counts = counts + 0.01 * centre  # tie-break in favour of the current label
        new = vals[np.argmax(counts, axis=0)]
        change = inside & (misfit(new) <= misfit(labels) + tolerance)
        labels = np.where(change, new, labels)
    return labels


def vectorise(
    footprint: Polygon,
    raster: np.ndarray,
    transform: Affine,
    *,
    simplify: float = 0.5,
    min_area: float = 1.0,
    grid: float = 0.001,
) -> list[tuple[Polygon, int]]:
    """Cells (polygon, label) that tile ``footprint`` exactly, from a label raster."""
    from rasterio import features

    footprint = shapely.set_precision(footprint, grid)  # on the same grid as the overlays: no sliver gaps
    shift = int(raster.min())
    pieces, values = [], []
    for geom, v in features.shapes((raster - shift).astype(np.int32), transform=transform, connectivity=4):
        pieces.append(shapely.geometry.shape(geom))
        values.append(int(v) + shift)
    if len(pieces) > 1 and simplify > 0:
        pieces = list(shapely.coverage_simplify(np.array(pieces, dtype=object), simplify))
    cells: list[tuple[Polygon, int]] = []
    for poly, v in zip(pieces, values):
        if not poly.is_valid:
            poly = shapely.make_valid(poly)
        clipped = shapely.intersection(poly, footprint, grid_size=grid)
        for part in shapely.get_parts(clipped):
            if isinstance(part, Polygon) and part.area > _DUST:
                cells.append((part, v))
    cells = _fill_gaps(footprint, cells, grid)
    return _merge_small(cells, min_area, grid)


def _fill_gaps(footprint: Polygon, cells: list[tuple[Polygon, int]], grid: float) -> list[tuple[Polygon, int]]:
    """Give any part of the footprint not covered by a cell (numerical slivers) to its best neighbour."""
    covered = shapely.union_all([c for c, _ in cells], grid_size=grid) if cells else Polygon()
    gap = shapely.difference(footprint, covered, grid_size=grid)
    for part in shapely.get_parts(gap):
        if not isinstance(part, Polygon) or part.area <= _DUST:
            continue
        cells.append((part, None))  # type: ignore[arg-type]
    return cells


def _merge_small(cells: list[tuple[Polygon, int | None]], min_area: float, grid: float) -> list[tuple[Polygon, int]]:
    """Merge cells smaller than ``min_area`` (and unlabelled gap pieces) into the neighbour they share most
    boundary with."""
    cells = list(cells)
    changed = True
    while changed and len(cells) > 1:
        changed = False
        order = sorted(range(len(cells)), key=lambda i: (cells[i][1] is not None, cells[i][0].area))
        for i in order:
            poly, v = cells[i]
            if v is not None and poly.area >= min_area:
                continue
            best, best_len = None, 0.0
            for j, (other, _) in enumerate(cells):
                if j == i:
                    continue
                shared = poly.boundary.intersection(other.boundary).length if poly.distance(other) < grid else 0.0
                if shared > best_len:
                    best, best_len = j, shared
            if best is None:
                continue
            merged = shapely.union(cells[best][0], poly, grid_size=grid)
            parts = [p for p in shapely.get_parts(merged) if isinstance(p, Polygon)]
            if len(parts) != 1:
                continue
            cells[best] = (parts[0], cells[best][1])
            del cells[i]
            changed = True
            break
    return [(p, v if v is not None else NODATA) for p, v in cells]


def single_polygon(geom, min_area: float = _DUST) -> Polygon | None:
    """The one polygon of an overlay result (a Polygon, or a collection whose other parts are lines, points or
    dust), else None (empty, or several real polygons)."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and p.area > min_area]
    return parts[0] if len(parts) == 1 and parts[0].is_valid else None


def carve_corners(cells: list[tuple[Polygon, int]], points: np.ndarray, size: float = 0.5, grid: float = 0.001
                  ) -> list[tuple[Polygon, int]]:
    """The repair for corners where roofs of alternating heights meet (a non-manifold vertical edge): at each of
    ``points`` (k, 2) where three or more cells meet, the corner (within ``size``) of the smallest of them (cells of
    roof planes before nodata cells) goes to the neighbour it borders most there, so one cell fewer meets at the
    point; the roof changes over at most ``size``² per point. Returns ``cells`` itself when nothing was carved."""
    out = list(cells)
    for x, y in np.unique(np.round(np.asarray(points) / grid), axis=0) * grid:
        near = np.flatnonzero(shapely.distance([poly for poly, _ in out], shapely.Point(x, y)) < grid).tolist()
        if len(near) < 3:
            continue
        i = min(near, key=lambda k: (out[k][1] == NODATA, out[k][0].area))
        square = shapely.box(x - size, y - size, x + size, y + size)
        # overlays may give collections (with lines or points) or several parts: only one polygon is usable
        piece = single_polygon(shapely.intersection(out[i][0], square, grid_size=grid))
        rest = single_polygon(shapely.difference(out[i][0], square, grid_size=grid))
        if piece is None or rest is None:
            continue
        border = {k: shapely.intersection(piece.boundary, out[k][0].boundary).length for k in near if k != i}
        j = max(border, key=lambda k: (border[k], -k))  # the longest shared border; ties: the first cell
        grown = single_polygon(shapely.union(out[j][0], piece, grid_size=grid))
        if border[j] > 0 and grown is not None:
            out[i], out[j] = (rest, out[i][1]), (grown, out[j][1])
    return cells if all(a is b for a, b in zip(out, cells)) else out


def snap_to_intersections(
    cells: list[tuple[Polygon, int]],
    planes: Sequence[Plane],
    footprint: Polygon,
    *,
    max_move: float = 1.0,
    max_gap: float = 0.6,
    grid: float = 0.001,
) -> list[tuple[Polygon, int]]:
    """Move vertices shared by cells of different sloped planes onto the planes' intersection (ridges, hips,
    valleys); vertices on the footprint boundary slide along it. Moves longer than ``max_move`` are refused, and
    the whole snap is undone if it would make any cell invalid."""
    key = lambda xy: (round(xy[0] / grid), round(xy[1] / grid))  # noqa: E731
    owners: dict[tuple[int, int], set[int]] = {}
    for poly, v in cells:
        for xy in np.asarray(poly.exterior.coords)[:-1]:
            owners.setdefault(key(xy), set()).add(v)
    boundary = footprint.exterior
    corners = {key(xy) for ring in [footprint.exterior, *footprint.interiors] for xy in np.asarray(ring.coords)}
    moves: dict[tuple[int, int], tuple[float, float]] = {}
    for k, labs in owners.items():
        labs = sorted(labs - {NODATA})
        if len(labs) < 2 or k in corners:  # footprint corners never move
            continue
        xy = np.array(k, dtype=np.float64) * grid
        zs = [float(planes[i].z(xy[0], xy[1])) for i in labs]
        if max(zs) - min(zs) > max_gap:
            continue  # a step between roofs, not a ridge / hip / valley
        on_boundary = boundary.distance(shapely.Point(xy)) < 2 * grid
        new = _meet(xy, [planes[i] for i in labs], boundary if on_boundary else None)
        if new is not None and np.hypot(*(new - xy)) <= max_move:
            moves[k] = (float(new[0]), float(new[1]))
    return move_vertices(cells, moves, footprint, grid)


def move_vertices(cells: list[tuple[Polygon, int]], moves: dict[tuple[int, int], tuple[float, float] | None],
                  footprint: Polygon, grid: float = 0.001) -> list[tuple[Polygon, int]]:
    """``cells`` with the vertices keyed by their ``grid`` coordinates moved (None: dropped; a vertex shared by
    several cells moves in all of them); ``cells`` itself when nothing moves or when any moved cell would be
    invalid (a ring collapsed to fewer than three vertices included) or the cells would no longer tile
    ``footprint`` exactly."""
    if not moves:
        return cells

    def ring(coords) -> list[tuple[float, float]]:
        keyed = [((round(x / grid), round(y / grid)), (x, y)) for x, y in np.asarray(coords)[:-1, :2]]
        return [xy for xy in (moves.get(k, xy) for k, xy in keyed) if xy is not None]

    out = []
    for poly, v in cells:
        rings = [ring(poly.exterior.coords)] + [ring(r.coords) for r in poly.interiors]
        if any(len(set(r)) < 3 for r in rings):  # a ring collapsed by the moves: refuse them
            return cells
        new = Polygon(rings[0], rings[1:])
        if not new.is_valid:
            return cells
        new = shapely.set_precision(new, grid)
        if not isinstance(new, Polygon) or not new.is_valid or new.is_empty or new.area <= 0:
            return cells
        out.append((new, v))
    union = shapely.union_all([p for p, _ in out], grid_size=grid)
    total = sum(p.area for p, _ in out)
    if abs(total - footprint.area) > 1e-4 * footprint.area or union.symmetric_difference(footprint).area > 1e-4:
        return cells  # the moved cells must still tile the footprint exactly (no gap, no overlap)
    return out


def _meet(xy: np.ndarray, planes: list[Plane], boundary) -> np.ndarray | None:
    """The point nearest ``xy`` where the given planes have equal heights (on ``boundary`` when given)."""
    a = np.array([[p.a, p.b] for p in planes])
    c = np.array([p.c for p in planes])
    rows = [(a[i] - a[0], c[0] - c[i]) for i in range(1, len(planes))]
    A = np.array([r[0] for r in rows])
    b = np.array([r[1] for r in rows])
    if boundary is None:
        if len(planes) == 2:
            n = A[0]
            nn = n @ n
            if nn < 1e-8:
                return None
            return xy + (b[0] - n @ xy) / nn * n
        sol, *_ = np.linalg.lstsq(A, b, rcond=None)
        resid = np.abs(A @ sol - b).max()
        return sol if resid < 0.05 else None
    # on the footprint boundary: the equal-height point along the nearest boundary segments
    coords = np.asarray(boundary.coords)
    best, best_d = None, np.inf
    for s in range(len(coords) - 1):
        p0, p1 = coords[s], coords[s + 1]
        seg = p1 - p0
        L2 = seg @ seg
        if L2 == 0:
            continue
        if np.hypot(*(xy - (p0 + np.clip((xy - p0) @ seg / L2, 0, 1) * seg))) > 0.01:
            continue
        n = A[0]
        den = n @ seg
        if abs(den) < 1e-9:
            continue
        t = (b[0] - n @ p0) / den
        if 0 <= t <= 1:
            cand = p0 + t * seg
            d = np.hypot(*(cand - xy))
            if d < best_d:
                best, best_d = cand, d
    return best
