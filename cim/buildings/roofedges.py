"""Edges of a roof partition made straight and put where the data say.

The raster partition puts every edge between two roof planes on its cell grid: staircases up to a cell off. Along
a ridge, hip or valley that costs little (the planes meet there), but a step (a wall between two roof levels) a
quarter metre off over 8 m outweighs the whole rest of a small roof. Each edge between two planes is cut into
straight pieces (at the corners its simplification keeps) and each piece gets a line:

* a ridge, hip or valley piece (the planes within ``min_step`` somewhere along it): where the planes meet;
* a step piece: where the points change from one plane to the other – the split that leaves the fewest points on
  the wrong side, in the middle of the gap between the two point sets, over directions near the piece's own; a
  footprint edge direction (or its normal) where it splits them as well (walls parallel or orthogonal to the
  outline where the data allow); points between the two heights (on the wall, or a rounded edge) pin the line.

The vertices go onto the lines (on the outline they slide along it, corners of two pieces go to the lines'
meeting point) and a piece whose both ends reached its line becomes one straight segment; a piece that would make
a cell invalid or break the tiling of the footprint is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

from cim.buildings.partition import NODATA, move_vertices
from cim.buildings.planes import Plane

Key = tuple[int, int]  # a vertex by its coordinates in grid units
# an edge: its vertices' lines (normal, offset) and its pieces (first, last and inner vertices)
Edge = tuple[dict[Key, list[tuple[np.ndarray, float]]], list[tuple[Key, Key, list[Key]]]]
_TURNS = np.radians([-6.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 6.0])  # directions tried around a piece's own


def outline_directions(footprint: Polygon, min_length: float = 2.0) -> np.ndarray:
    """Directions (radians in [0, π)) of the footprint's edges of at least ``min_length`` and of their normals."""
    dirs = []
    for ring in [footprint.exterior, *footprint.interiors]:
        xy = np.asarray(ring.coords)
        d = np.diff(xy, axis=0)
        long = np.hypot(d[:, 0], d[:, 1]) >= min_length
        dirs.append(np.arctan2(d[long, 1], d[long, 0]))
    ang = np.concatenate(dirs) if dirs else np.zeros(0)
    return np.unique(np.round(np.r_[ang, ang + np.pi / 2] % np.pi, 6))


def straighten_edges(
    cells: list[tuple[Polygon, int]],
    planes: Sequence[Plane],
    footprint: Polygon,
    xyz: np.ndarray,
    *,
    epsilon: float,
    min_step: float = 0.6,
    reach: float = 1.5,
    corner: float = 0.9,
    min_length: float = 1.0,
    min_points: int = 6,
    max_error: float = 0.1,
    snap_deg: float = 10.0,
    max_move: float = 1.0,
    grid: float = 0.001,
) -> list[tuple[Polygon, int]]:
    """``cells`` with the pieces of their edges between two planes straightened (see the module): a step piece
    (the planes more than ``min_step`` apart all along) is fitted to the points (``xyz``; a point belongs to the
    nearer plane when within ``epsilon`` of it) when it is at least ``min_length`` long, has ``min_points`` points on
    each side within ``reach`` and at most ``max_error`` of them on the wrong side; no vertex moves more than
    ``max_move``."""
    vertices = shapely.multipoints(shapely.get_coordinates([poly for poly, _ in cells]))
    polys = [shapely.snap(poly, vertices, grid / 2) for poly, _ in cells]  # every cell has its T-junctions
    cells = [(poly, lab) for poly, (_, lab) in zip(polys, cells)]
    outline = outline_directions(footprint)
    owners: dict[Key, int] = {}  # how many cells each vertex belongs to
    for poly in polys:
        for ring in [poly.exterior, *poly.interiors]:
            for x, y in np.asarray(ring.coords)[:-1, :2]:
                owners[(round(x / grid), round(y / grid))] = owners.get((round(x / grid), round(y / grid)), 0) + 1
    straight = shapely.simplify(footprint, grid / 2)  # the outline without its collinear vertices (shared walls)
    if not isinstance(straight, Polygon) or straight.is_empty:
        straight = footprint
    kept = {(round(x / grid), round(y / grid)) for x, y in shapely.get_coordinates(straight)}
    inline = {(round(x / grid), round(y / grid)) for x, y in shapely.get_coordinates(footprint)} - kept
    inline = {k for k in inline if owners.get(k, 0) == 1}  # dropped with the moves: vertices slide past them
    edges: list[Edge] = []
    a_idx, b_idx = shapely.STRtree(polys).query(polys, predicate="intersects")
    for i, j in zip(a_idx.tolist(), b_idx.tolist()):
        li, lj = cells[i][1], cells[j][1]
        if i >= j or NODATA in (li, lj) or li == lj:
            continue
        shared = shapely.line_merge(shapely.intersection(polys[i].boundary, polys[j].boundary, grid_size=grid))
        for line in shapely.get_parts(shared):
            if not isinstance(line, LineString) or line.length < min_length:
                continue
            for coords in _pieces(line, corner, min_length):
                za, zb = planes[li].z(coords[:, 0], coords[:, 1]), planes[lj].z(coords[:, 0], coords[:, 1])
                if np.abs(za - zb).min() <= min_step:  # a ridge, hip or valley: where the planes meet
                    fit = _meet_line(planes[li], planes[lj], coords, max_move)
                else:
                    fit = _fit_piece(coords, planes[li], planes[lj], xyz, outline, epsilon=epsilon, reach=reach,
                                     min_points=min_points, max_error=max_error, snap_deg=snap_deg)
                if fit is None:
                    continue
                keys = [(round(x / grid), round(y / grid)) for x, y in coords]
                edges.append(({k: [fit] for k in keys}, [(keys[0], keys[-1], [k for k in keys[1:-1]
                                                                            if owners.get(k, 0) == 2])]))
    out = _apply(cells, edges, footprint, straight, inline, max_move, grid)
    if out is not cells or len(edges) < 2:
        return out
    taken: list[Edge] = []  # piece by piece, those that leave the cells valid
    for edge in edges:
        moved = _apply(cells, [*taken, edge], footprint, straight, inline, max_move, grid)
        if moved is not cells:
            taken.append(edge)
            out = moved
    return out


def _apply(cells: list[tuple[Polygon, int]], edges: list[Edge], footprint: Polygon, straight: Polygon,
           inline: set[Key], max_move: float, grid: float) -> list[tuple[Polygon, int]]:
    """``cells`` with the vertices of ``edges`` moved onto their lines or dropped, and the ``inline`` outline
    vertices dropped (``cells`` when invalid); vertices on the outline slide along ``straight`` (the footprint
    without its collinear vertices)."""
    lines: dict[Key, list[tuple[np.ndarray, float]]] = {}
    for edge_lines, _ in edges:
        for k, fits in edge_lines.items():
            lines.setdefault(k, []).extend(fits)
    moves: dict[Key, tuple[float, float] | None] = dict(_solve_vertices(lines, straight, max_move, grid))
    if moves:
        moves.update(dict.fromkeys(inline))
    for _, pieces in edges:  # a piece whose both ends moved onto its line becomes one straight segment
        for first, last, inner in pieces:
            if first in moves and last in moves:
                moves.update(dict.fromkeys(inner))
    return move_vertices(cells, moves, footprint, grid)


def _pieces(line: LineString, corner: float, min_length: float) -> list[np.ndarray]:
    """The vertices of each straight piece of ``line`` (split at the vertices its simplification at ``corner``
    keeps) at least ``min_length`` long."""
    coords = np.asarray(line.coords)[:, :2]
    keys = np.asarray(shapely.simplify(line, corner).coords)[:, :2]
    idx, start = [], 0
    for k in keys:  # the kept vertices, in order along the line
        start += int(np.argmin(np.hypot(*(coords[start:] - k).T)))
        idx.append(start)
    out = []
    for s, e in zip(idx[:-1], idx[1:]):
        if np.hypot(*(coords[e] - coords[s])) >= min_length:
            out.append(coords[s:e + 1])
    return out


def _meet_line(plane_a: Plane, plane_b: Plane, coords: np.ndarray, max_move: float,
               min_kink: float = 0.05) -> tuple[np.ndarray, float] | None:
    """The line (unit normal, offset) where the two planes have equal heights, when their slopes differ by at
    least ``min_kink`` and every vertex of the piece lies within ``max_move`` of it."""
    da, db = plane_a.a - plane_b.a, plane_a.b - plane_b.b
    norm = float(np.hypot(da, db))
    if norm < min_kink:
        return None
    n, t = np.array([da, db]) / norm, (plane_b.c - plane_a.c) / norm
    return (n, float(t)) if np.abs(coords @ n - t).max() <= max_move else None


def _fit_piece(coords: np.ndarray, plane_a: Plane, plane_b: Plane, xyz: np.ndarray, outline: np.ndarray, *,
               epsilon: float, reach: float, min_points: int, max_error: float, snap_deg: float,
               min_wall: int = 3, wall_reach: float = 0.3) -> tuple[np.ndarray, float] | None:
    """The line (unit normal n, offset t: n·p = t) that best splits the points of the two planes near the piece
    from ``coords[0]`` to ``coords[-1]``; None when the points do not decide it. With ``min_wall`` points between
    the planes' heights (on the step's wall: ALS; a rounded edge: image matching) within ``wall_reach`` of the
    split, the line goes through their median instead."""
    p0, p1 = coords[0], coords[-1]
    length = float(np.hypot(*(p1 - p0)))
    d = (p1 - p0) / length
    n0 = np.array([-d[1], d[0]])
    lo, hi = np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach
    near = np.all((xyz[:, :2] >= lo) & (xyz[:, :2] <= hi), axis=1)
    pts = xyz[near]
    rel = pts[:, :2] - p0
    along, across = rel @ d, rel @ n0
    za, zb = plane_a.z(pts[:, 0], pts[:, 1]), plane_b.z(pts[:, 0], pts[:, 1])
    da, db = np.abs(pts[:, 2] - za), np.abs(pts[:, 2] - zb)
    strip = (along >= 0) & (along <= length) & (np.abs(across) <= reach) & (np.abs(za - zb) > 2 * epsilon)
    keep = strip & (np.minimum(da, db) < epsilon)
    wall = strip & (pts[:, 2] > np.minimum(za, zb) + epsilon) & (pts[:, 2] < np.maximum(za, zb) - epsilon)
    xy, is_a = pts[keep, :2], (da < db)[keep]
    if is_a.sum() < min_points or (~is_a).sum() < min_points:
        return None
    theta0 = float(np.arctan2(d[1], d[0]))
    diff = (outline - theta0 + np.pi / 2) % np.pi - np.pi / 2  # outline directions relative to the piece's
    snapped = theta0 + diff[np.abs(diff) <= np.radians(snap_deg)]
    thetas = np.r_[theta0 + _TURNS, snapped]
    normals = np.column_stack([-np.sin(thetas), np.cos(thetas)])
    errors, offsets, margins = _best_splits(xy @ normals.T, is_a, normals @ ((p0 + p1) / 2))
    limit = max_error * len(xy)
    own, snap = np.arange(len(_TURNS)), np.arange(len(_TURNS), len(thetas))
    best = int(own[np.lexsort((-margins[own], errors[own]))[0]])
    if len(snap):  # an outline direction where it explains the points as well (one point and 2 % of slack)
        s = int(snap[np.argmin(errors[snap])])
        if errors[s] <= errors[best]:
            best = s
    if errors[best] > limit:
        return None
    on_wall = pts[wall, :2] @ normals[best]  # points on the step wall (or a rounded edge) between the planes
    if len(on_wall) >= min_wall and abs(np.median(on_wall) - offsets[best]) <= wall_reach:
        return normals[best], float(np.median(on_wall))
    return normals[best], float(offsets[best])


def _best_splits(s: np.ndarray, is_a: np.ndarray, current: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each direction (columns of ``s``: the points' offsets along its normal): the fewest points on the wrong
    side of a split (either plane on either side), the split's offset (middle of the gap; ties: nearest the
    ``current`` offset) and the gap's width."""
    order = np.argsort(s, axis=0, kind="stable")
    ss = np.take_along_axis(s, order, axis=0)  # (m, D)
    a = is_a[order]
    ca = np.cumsum(a, axis=0)[:-1]  # points of plane a among the first k (k = 1 .. m-1)
    cb = np.cumsum(~a, axis=0)[:-1]
    ta, tb = a.sum(axis=0), (~a).sum(axis=0)
    err = np.minimum(cb + ta - ca, ca + tb - cb)  # a left of the split, or a right of it
    mid = (ss[:-1] + ss[1:]) / 2
    gap = ss[1:] - ss[:-1]
    key = err + np.abs(mid - current) / (1.0 + np.abs(mid - current)) * 0.5  # fewest errors, then nearest
    k = np.argmin(key, axis=0)
    cols = np.arange(s.shape[1])
    return err[k, cols], mid[k, cols], gap[k, cols]


def _solve_vertices(lines: dict[Key, list[tuple[np.ndarray, float]]], footprint: Polygon, max_move: float,
                    grid: float) -> dict[Key, tuple[float, float]]:
    """Where each vertex goes: onto its line (several lines: their least-squares meeting point); a vertex on the
    outline slides along it to its first line; outline corners stay."""
    rings = [np.asarray(r.coords)[:, :2] for r in [footprint.exterior, *footprint.interiors]]
    corners = {(round(x / grid), round(y / grid)) for r in rings for x, y in r}
    segs = np.concatenate([np.stack([r[:-1], r[1:]], axis=1) for r in rings])  # (S, 2, 2)
    moves: dict[Key, tuple[float, float]] = {}
    for k, fits in lines.items():
        if k in corners:
            continue
        xy = np.array(k, dtype=np.float64) * grid
        new = _along_outline(xy, fits[0], segs, grid)
        if new is None:
            N = np.array([n for n, _ in fits])
            t = np.array([t for _, t in fits])
            lam = 1e-3  # pulls parallel lines' vertices to their middle, moves a single line's onto it
            new = np.linalg.solve(N.T @ N + lam * np.eye(2), N.T @ t + lam * xy)
        elif not np.isfinite(new).all():
            continue
        if np.hypot(*(new - xy)) <= max_move:
            moves[k] = (float(new[0]), float(new[1]))
    return moves


def _along_outline(xy: np.ndarray, fit: tuple[np.ndarray, float], segs: np.ndarray, grid: float) -> np.ndarray | None:
    """For a vertex on the outline (``segs``): where its outline segment crosses the line (NaN when it does not);
    None for a vertex off the outline."""
    p, q = segs[:, 0], segs[:, 1]
    e = q - p
    u = np.clip(np.einsum("ij,ij->i", xy - p, e) / np.maximum(np.einsum("ij,ij->i", e, e), 1e-12), 0, 1)
    dist = np.hypot(*(p + u[:, None] * e - xy).T)
    s = int(np.argmin(dist))
    if dist[s] > 2 * grid:
        return None
    n, t = fit
    den = float(n @ e[s])
    w = (t - n @ p[s]) / den if abs(den) > 1e-9 else np.nan
    return p[s] + w * e[s] if 0.0 <= w <= 1.0 else np.array([np.nan, np.nan])
