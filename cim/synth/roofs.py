"""Exact LoD2.2 building solids of the common German roof types (AdV ``dachform`` codes).

A building is built in a local frame (footprint axis-aligned, ridge along local x), then rotated and moved. Faces
are planar polygons, counter-clockwise seen from outside (outward normals), with one semantic each:
``GroundSurface``, ``WallSurface`` or ``RoofSurface``. Walls are derived from the roof outline above each
footprint edge, so every solid is closed.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import Polygon

FLAT, SHED, GABLE, HIP, HALF_HIP, MANSARD, PYRAMID = 1000, 2100, 3100, 3200, 3300, 3400, 3500
ROOF_TYPES = {FLAT: "flat", SHED: "shed", GABLE: "gable", HIP: "hip", HALF_HIP: "half-hip", MANSARD: "mansard",
              PYRAMID: "pyramid"}
MANSARD_BREAK = (0.65, 0.75)  # mansard kink: at this share of the half width, this share of the roof height

_EPS = 1e-7


def _rect_roof(length: float, width: float, eave: float, ridge: float, roof_type: int) -> list[np.ndarray]:
    """Roof polygons of a ``length`` (x) by ``width`` (y) rectangle centred on the origin, normals up."""
    a, b = length / 2.0, width / 2.0
    if roof_type == FLAT:
        return [np.array([[-a, -b, eave], [a, -b, eave], [a, b, eave], [-a, b, eave]])]
    if roof_type == SHED:  # low eave on the -y side, high on +y
        return [np.array([[-a, -b, eave], [a, -b, eave], [a, b, ridge], [-a, b, ridge]])]
    if roof_type == MANSARD:  # steep lower and shallow upper planes on both long sides, gable walls at the ends
        yk, zk = b * MANSARD_BREAK[0], eave + MANSARD_BREAK[1] * (ridge - eave)
        lower = np.array([[-a, -b, eave], [a, -b, eave], [a, -yk, zk], [-a, -yk, zk]])
        upper = np.array([[-a, -yk, zk], [a, -yk, zk], [a, 0.0, ridge], [-a, 0.0, ridge]])
        return [lower, upper, lower * [-1.0, -1.0, 1.0], upper * [-1.0, -1.0, 1.0]]
    # pitched roofs: a ridge along x; ``f`` is the fraction of the roof height the gable wall reaches
    f = {GABLE: 1.0, HALF_HIP: 0.6, HIP: 0.0, PYRAMID: 0.0}[roof_type]
    knee_y = b * (1.0 - f)  # half width of the hip base (0 for a gable)
    knee_z = eave + f * (ridge - eave)
    d = knee_y  # hip depth in plan: the hip planes have the same slope as the main planes
    south = [[-a, -b, eave], [a, -b, eave], [a, -knee_y, knee_z], [a - d, 0.0, ridge], [-a + d, 0.0, ridge],
             [-a, -knee_y, knee_z]]
    north = [[a, b, eave], [-a, b, eave], [-a, knee_y, knee_z], [-a + d, 0.0, ridge], [a - d, 0.0, ridge],
             [a, knee_y, knee_z]]
    polys = [_dedupe(np.array(south)), _dedupe(np.array(north))]
    if knee_y > _EPS:
        polys.append(np.array([[a, -knee_y, knee_z], [a, knee_y, knee_z], [a - d, 0.0, ridge]]))
        polys.append(np.array([[-a, knee_y, knee_z], [-a, -knee_y, knee_z], [-a + d, 0.0, ridge]]))
    return polys


def _dedupe(ring: np.ndarray) -> np.ndarray:
    keep = np.linalg.norm(ring - np.roll(ring, 1, axis=0), axis=1) > _EPS
    return ring[keep]


def newell_vector(ring: np.ndarray) -> np.ndarray:
    """Newell's vector of a planar polygon: its normal (right-hand rule over the vertex order) times twice its
    area."""
    nxt = np.roll(ring, -1, axis=0)
    return np.array([
        np.sum((ring[:, 1] - nxt[:, 1]) * (ring[:, 2] + nxt[:, 2])),
        np.sum((ring[:, 2] - nxt[:, 2]) * (ring[:, 0] + nxt[:, 0])),
        np.sum((ring[:, 0] - nxt[:, 0]) * (ring[:, 1] + nxt[:, 1])),
    ])


def newell_normal(ring: np.ndarray) -> np.ndarray:
    """Unit normal of a planar polygon (Newell's method; right-hand rule over the vertex order)."""
    n = newell_vector(ring)
    return n / np.linalg.norm(n)


def _walls(footprint: np.ndarray, roofs: list[np.ndarray], ground: float) -> list[np.ndarray]:
    """One wall per footprint edge (CCW footprint ring): bottom edge plus the roof outline above it."""
    roof_pts = np.unique(np.round(np.concatenate(roofs), 9), axis=0)
    walls = []
    n = len(footprint)
    for i in range(n):  # a handful of edges per building: not a hot path
        p, q = footprint[i], footprint[(i + 1) % n]
        edge = q - p
        length = np.linalg.norm(edge)
        tangent = edge / length
        normal = np.array([tangent[1], -tangent[0]])
        rel = roof_pts[:, :2] - p
        on_plane = np.abs(rel @ normal) < 1e-6
        s = rel @ tangent
        on_edge = on_plane & (s > -1e-6) & (s < length + 1e-6)
        top = roof_pts[on_edge]
        top = top[np.argsort(-(top[:, :2] - p) @ tangent)]  # from q back to p
        ring = np.vstack([[p[0], p[1], ground], [q[0], q[1], ground], top])
        walls.append(_dedupe(ring))
    return walls


def rectangle_solid(
    length: float, width: float, eave: float, ridge: float, roof_type: int
) -> tuple[list[np.ndarray], list[str]]:
    """Faces and semantics of a rectangular building in its local frame (ground at z = 0, centred on 0, 0)."""
    if roof_type not in ROOF_TYPES:
        raise ValueError(f"unknown roof type {roof_type}; known: {sorted(ROOF_TYPES)}")
    if roof_type == HIP and length <= width:
        raise ValueError("a hip roof needs length > width")
    if roof_type == PYRAMID and length != width:
        raise ValueError("a pyramid roof needs a square footprint")
    a, b = length / 2.0, width / 2.0
    footprint = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
    roofs = _rect_roof(length, width, eave, ridge if roof_type != FLAT else eave, roof_type)
    return roof_solid(footprint, roofs, 0.0)


def flat_solid(footprint: Polygon, height: float) -> tuple[list[np.ndarray], list[str]]:
    """Faces and semantics of a flat-roofed prism over any simple footprint (local frame, ground z = 0)."""
    ring = np.asarray(shapely.geometry.polygon.orient(footprint, 1.0).exterior.coords)[:-1]
    roof = np.column_stack([ring, np.full(len(ring), height)])
    return roof_solid(ring, [roof], 0.0)


def roof_solid(footprint: np.ndarray, roofs: list[np.ndarray], ground: float = 0.0
               ) -> tuple[list[np.ndarray], list[str]]:
    """Faces and semantics of a solid over a CCW ``footprint`` ring with roof polygons (normals up) whose outline
    runs along the footprint edges: ground face, one wall per footprint edge up to the roof, the roofs."""
    ground_ring = np.column_stack([footprint[::-1], np.full(len(footprint), ground)])
    walls = _walls(footprint, roofs, ground)
    faces = [ground_ring, *walls, *roofs]
    semantics = ["GroundSurface"] + ["WallSurface"] * len(walls) + ["RoofSurface"] * len(roofs)
    return faces, semantics


def place(faces: list[np.ndarray], angle_deg: float, x: float, y: float, z: float) -> list[np.ndarray]:
    """Rotate faces by ``angle_deg`` counter-clockwise about the local origin, then move them to (x, y, z)."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return [f @ rot.T + np.array([x, y, z]) for f in faces]


def solid_volume(faces: list[np.ndarray]) -> float:
    """Signed volume of a closed solid (positive when the faces point outwards); fan-triangulates each face."""
    total = 0.0
    ref = np.concatenate(faces).mean(axis=0)  # a local origin keeps large map coordinates exact
    for face in faces:
        f = face - ref
        v0 = f[0]
        a, b = f[1:-1] - v0, f[2:] - v0
        total += float(np.sum(np.einsum("ij,ij->i", np.cross(a, b), np.broadcast_to(v0, a.shape)))) / 6.0
    return total
