"""Extrude a planar partition of a footprint with one roof plane per cell into a closed 2.5D solid.

Input: cells (shapely Polygons without holes that tile the footprint), one roof plane per cell
(z = a·x + b·y + c) and the ground height. Output faces (outer rings, counter-clockwise seen from outside) with
semantics: one GroundSurface (or one per cell when the footprint has holes), one RoofSurface per cell, vertical
WallSurfaces on the footprint boundary and vertical step walls between cells whose roofs differ along a shared
edge. Every edge of the result is shared by exactly two faces in opposite directions (T-junctions are noded, the
vertical edges of walls are split at every height used at that corner), so the solid is watertight by
construction. Heights are snapped to ``snap`` (1 mm) so roofs meeting at a ridge share their vertices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

Plane = tuple[float, float, float]


def _key(xy: np.ndarray, snap: float) -> tuple[int, int]:
    return int(round(xy[0] / snap)), int(round(xy[1] / snap))


def node_rings(cells: Sequence[Polygon], snap: float = 0.001) -> list[np.ndarray]:
    """CCW exterior rings of ``cells`` (unclosed, snapped), with every partition vertex that lies on an edge
    inserted into it (removes T-junctions)."""
    rings = []
    for c in cells:
        r = np.asarray(orient(c, 1.0).exterior.coords)[:-1, :2]
        r = np.round(r / snap) * snap
        keep = np.any(r != np.roll(r, 1, axis=0), axis=1)
        rings.append(r[keep])
    allv = np.unique(np.concatenate(rings), axis=0) if rings else np.zeros((0, 2))
    out = []
    tol = snap * 0.6
    for r in rings:
        pts = []
        for i in range(len(r)):
            a, b = r[i], r[(i + 1) % len(r)]
            pts.append(a)
            ab = b - a
            L2 = float(ab @ ab)
            if L2 == 0:
                continue
            t = (allv - a) @ ab / L2
            proj = a + np.outer(t, ab)
            d = np.linalg.norm(allv - proj, axis=1)
            on = (t > 1e-9) & (t < 1 - 1e-9) & (d < tol)
            if on.any():
                for j in np.argsort(t[on]):
                    pts.append(allv[on][j])
        ring = np.asarray(pts)
        keep = np.any(np.abs(ring - np.roll(ring, 1, axis=0)) > tol, axis=1)
        out.append(ring[keep])
    return out


def _split_crossings(rings: list[np.ndarray], planes: Sequence[Plane], snap: float) -> list[np.ndarray]:
    """Insert the point where two neighbouring roof planes cross along a shared edge into both rings."""
    edge_owner: dict[tuple, int] = {}
    for ci, r in enumerate(rings):
        for i in range(len(r)):
            edge_owner[(_key(r[i], snap), _key(r[(i + 1) % len(r)], snap))] = ci
    inserts: dict[tuple[int, tuple, tuple], np.ndarray] = {}
    for ci, r in enumerate(rings):
        for i in range(len(r)):
            p, q = r[i], r[(i + 1) % len(r)]
            cj = edge_owner.get((_key(q, snap), _key(p, snap)))
            if cj is None or cj < ci:
                continue
            dp = _z(planes[ci], p) - _z(planes[cj], p)
            dq = _z(planes[ci], q) - _z(planes[cj], q)
            if abs(dp) > 3 * snap and abs(dq) > 3 * snap and dp * dq < 0:
                t = dp / (dp - dq)
                x = np.round((p + t * (q - p)) / snap) * snap
                if _key(x, snap) not in (_key(p, snap), _key(q, snap)):
                    inserts[(ci, _key(p, snap), _key(q, snap))] = x
                    inserts[(cj, _key(q, snap), _key(p, snap))] = x
    if not inserts:
        return rings
    out = []
    for ci, r in enumerate(rings):
        pts = []
        for i in range(len(r)):
            p, q = r[i], r[(i + 1) % len(r)]
            pts.append(p)
            x = inserts.get((ci, _key(p, snap), _key(q, snap)))
            if x is not None:
                pts.append(x)
        out.append(np.asarray(pts))
    return out


def _z(plane: Plane, xy: np.ndarray) -> float:
    return plane[0] * xy[..., 0] + plane[1] * xy[..., 1] + plane[2]


def extrude_partition(
    cells: Sequence[Polygon],
    planes: Sequence[Plane],
    ground_z: float,
    *,
    footprint: Polygon | None = None,
    snap: float = 0.001,
    min_height: float = 0.1,
) -> tuple[list[np.ndarray], list[str]]:
    """Faces and semantics of the closed solid; roofs lower than ``ground_z + min_height`` are lifted to it.

    ``footprint`` (the union of the cells) decides whether one ground face can be used (no holes).
    """
    if len(cells) != len(planes):
        raise ValueError("one plane per cell")
    rings = _split_crossings(node_rings(cells, snap), planes, snap)
    zg = round(ground_z / snap) * snap
    zmin = zg + min_height

    # roof height of each cell at each of its corners; heights within 3 snap of each other at one corner are
    # merged so that neighbouring roofs meeting at a ridge or eave share the vertex exactly
    raw: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for ci, r in enumerate(rings):
        for p in r:
            z = max(round(float(_z(planes[ci], p)) / snap) * snap, zmin)
            raw.setdefault(_key(p, snap), []).append((z, ci))
    cell_z: dict[tuple[int, tuple[int, int]], float] = {}
    corner_z: dict[tuple[int, int], set[float]] = {}
    for k, values in raw.items():
        values.sort()
        zs = {zg}
        base = None
        for z, ci in values:
            if base is None or z - base > 3 * snap:
                base = z
            cell_z[(ci, k)] = base
            zs.add(base)
        corner_z[k] = zs

    def roof_z(ci: int, xy: np.ndarray) -> float:
        return cell_z[(ci, _key(xy, snap))]

    edge_owner: dict[tuple, int] = {}
    for ci, r in enumerate(rings):
        for i in range(len(r)):
            edge_owner[(_key(r[i], snap), _key(r[(i + 1) % len(r)], snap))] = ci

    faces: list[np.ndarray] = []
    sem: list[str] = []
    for ci, r in enumerate(rings):
        faces.append(np.array([(p[0], p[1], roof_z(ci, p)) for p in r]))
        sem.append("RoofSurface")

    def vertical(p: np.ndarray, z0: float, z1: float) -> list[tuple[float, float, float]]:
        """Points on the vertical line at p from z0 to z1 (z0 excluded, z1 included), in order."""
        zs = sorted(z for z in corner_z[_key(p, snap)] if min(z0, z1) < z < max(z0, z1))
        if z1 < z0:
            zs = zs[::-1]
        return [(p[0], p[1], z) for z in zs] + [(p[0], p[1], z1)]

    for ci, r in enumerate(rings):
        for i in range(len(r)):
            p, q = r[i], r[(i + 1) % len(r)]
            cj = edge_owner.get((_key(q, snap), _key(p, snap)))
            top_p, top_q = roof_z(ci, p), roof_z(ci, q)
            if cj is None:
                bot_p = bot_q = zg
            else:
                bot_p, bot_q = roof_z(cj, p), roof_z(cj, q)
                if top_p <= bot_p and top_q <= bot_q:
                    continue  # the neighbour is higher or level: it owns the step wall (or there is none)
            # crossings were split by _split_crossings, so here top >= bottom at both ends
            ring = [(p[0], p[1], bot_p), (q[0], q[1], bot_q)]
            if top_q != bot_q:
                ring += vertical(q, bot_q, top_q)
            if top_p != bot_p:
                ring += [(p[0], p[1], top_p)] + vertical(p, top_p, bot_p)[:-1]
            faces.append(np.array(ring))
            sem.append("WallSurface")

    outer = None
    if footprint is not None and len(footprint.interiors) == 0 and len(rings) > 1:
        outer = _boundary_ring(rings, edge_owner, snap)
    if outer is not None:
        faces.append(np.array([(x, y, zg) for x, y in outer[::-1]]))
        sem.append("GroundSurface")
    else:
        for r in rings:
            faces.append(np.array([(x, y, zg) for x, y in r[::-1]]))
            sem.append("GroundSurface")
    return faces, sem


def _boundary_ring(rings: list[np.ndarray], edge_owner: dict, snap: float) -> np.ndarray | None:
    """The outer boundary of the partition as one CCW ring (edges without a twin, chained); None when the
    boundary edges do not form exactly one simple ring (then every cell gets its own ground face)."""
    nxt: dict[tuple[int, int], tuple[tuple[int, int], np.ndarray]] = {}
    n_edges = 0
    for r in rings:
        for i in range(len(r)):
            kp, kq = _key(r[i], snap), _key(r[(i + 1) % len(r)], snap)
            if (kq, kp) not in edge_owner:
                n_edges += 1
                if kp in nxt:
                    return None
                nxt[kp] = (kq, r[i])
    if not nxt:
        return None
    start = min(nxt)
    out, k = [], start
    for _ in range(len(nxt)):
        if k not in nxt:
            return None
        k2, p = nxt[k]
        out.append(p)
        k = k2
        if k == start:
            break
    if k != start or len(out) != n_edges:
        return None
    return np.asarray(out)


def footprint_cells(footprint: Polygon) -> list[Polygon]:
    """Split a polygon with holes into hole-free pieces (cuts through each hole), for flat extrusion."""
    pieces = [footprint]
    out: list[Polygon] = []
    while pieces:
        poly = pieces.pop()
        if not poly.interiors:
            out.append(poly)
            continue
        hx = poly.interiors[0].centroid.x
        minx, miny, maxx, maxy = poly.bounds
        left = shapely.box(minx - 1, miny - 1, hx, maxy + 1)
        right = shapely.box(hx, miny - 1, maxx + 1, maxy + 1)
        for half in (left, right):
            part = poly.intersection(half)
            pieces.extend(g for g in getattr(part, "geoms", [part]) if isinstance(g, Polygon) and g.area > 0)
    return out


def _wall_direction(face: np.ndarray) -> np.ndarray:
    """Unit horizontal direction along a vertical wall face (CCW seen from outside): its first edge with a length in
    plan."""
    d = face[1, :2] - face[0, :2]
    k = 0
    while np.hypot(*d) < 1e-9 and k + 2 < len(face):
        k += 1
        d = face[k + 1, :2] - face[k, :2]
    return d / max(float(np.hypot(*d)), 1e-12)


def merge_coplanar_walls(faces: list[np.ndarray], sem: list[str], tol: float = 1e-3
                         ) -> tuple[list[np.ndarray], list[str]]:
    """Merge wall faces that lie in one vertical plane and share edges (e.g. a gable wall cut at the ridge line
    by the roof partition) into one polygon each. The caller re-validates the result."""
    walls = [i for i, s in enumerate(sem) if s == "WallSurface"]
    groups: dict[tuple, list[int]] = {}
    for i in walls:
        u = _wall_direction(faces[i])
        n = np.array([u[1], -u[0]])  # outward horizontal normal
        key = (round(n[0], 4), round(n[1], 4), round(float(n @ faces[i][0, :2]) / tol))
        groups.setdefault(key, []).append(i)
    drop: set[int] = set()
    added: list[np.ndarray] = []
    for idx in groups.values():
        if len(idx) < 2:
            continue
        u = _wall_direction(faces[idx[0]])
        origin = faces[idx[0]][0, :2]
        polys = [Polygon(np.column_stack([(faces[i][:, :2] - origin) @ u, faces[i][:, 2]])) for i in idx]
        if not all(p.is_valid for p in polys):
            continue
        merged = shapely.union_all(polys, grid_size=tol / 10)
        if not isinstance(merged, Polygon) or merged.interiors:
            continue
        ring = np.asarray(orient(merged, 1.0).exterior.coords)[:-1]
        xy = origin + np.outer(ring[:, 0], u)
        added.append(np.column_stack([xy, ring[:, 1]]))
        drop.update(idx)
    if not added:
        return faces, sem
    out_f = [f for i, f in enumerate(faces) if i not in drop] + added
    out_s = [s for i, s in enumerate(sem) if i not in drop] + ["WallSurface"] * len(added)
    return out_f, out_s
