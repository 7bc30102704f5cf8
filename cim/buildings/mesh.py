"""Planar polygons of building solids as triangle meshes, and true 3D point-to-model distances.

Faces are outer rings (n, 3), counter-clockwise seen from outside. :func:`triangulate` turns all faces of a
solid into one triangle mesh at once: plane normals by Newell's method over all faces together, triangles and
quadrilaterals split in numpy (a quad along the diagonal whose two triangles both face like the polygon), larger
faces by GEOS's constrained Delaunay triangulation (earcut only where that fails). The distance of a point to a
model is its Euclidean distance to the nearest triangle, i.e. the perpendicular distance to the nearest roof, wall
or ground face (or to its edge or corner when the foot of the perpendicular falls outside the face); open3d's
``RaycastingScene`` answers all points of a building at once. Coordinates are shifted to the model's centre before
they go to open3d's float32, so projected coordinates (10⁵–10⁶ m) keep sub-millimetre precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import mapbox_earcut
import numpy as np
import shapely

_EPS_AREA = 1e-9  # m²: triangles smaller than this count as degenerate when a quad is split
_KEPT_AXES = np.array([[1, 2], [0, 2], [0, 1]])  # the axes left when axis 0, 1 or 2 is dropped


class TriangleMesh(NamedTuple):
    """Triangles of a solid; vertices are per face (flat shading; faces with fewer than 3 vertices are left out),
    ``face`` is each triangle's index into the given faces."""

    positions: np.ndarray  # (n, 3)
    triangles: np.ndarray  # (m, 3) indices into positions, wound like their face
    normals: np.ndarray  # (n, 3) unit normal of the vertex's face
    face: np.ndarray  # (m,)


def newell_vectors(v: np.ndarray, face: np.ndarray, nxt: np.ndarray, n_faces: int) -> np.ndarray:
    """Newell's vector (k, 3) of each face: the normal by the right-hand rule times twice the area. ``v`` holds
    the vertex rows of all faces, ``face`` the face of each row and ``nxt`` the row of the next vertex in its ring."""
    w = v[nxt]
    terms = np.column_stack([(v[:, 1] - w[:, 1]) * (v[:, 2] + w[:, 2]),
                             (v[:, 2] - w[:, 2]) * (v[:, 0] + w[:, 0]),
                             (v[:, 0] - w[:, 0]) * (v[:, 1] + w[:, 1])])
    return np.column_stack([np.bincount(face, terms[:, k], minlength=n_faces) for k in range(3)])


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)


def face_plane(face: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit normal (Newell's method, right-hand rule) and offset d (n·x = d) of a polygon."""
    n = len(face)
    normal = unit_rows(newell_vectors(face, np.zeros(n, np.int64), np.r_[1:n, 0], 1))[0]
    return normal, (float(normal @ face.mean(axis=0)) if normal.any() else 0.0)


def ring_rows(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each ring, next row of each vertex row) of rings stored one after another with ``sizes``
    vertices each; the last vertex of a ring is followed by its first."""
    starts = np.cumsum(sizes) - sizes
    nxt = np.arange(int(np.sum(sizes))) + 1
    ends = sizes > 0
    nxt[(starts + sizes - 1)[ends]] = starts[ends]
    return starts, nxt


def plane_axes(normals: np.ndarray) -> np.ndarray:
    """The two coordinate axes ((k, 2), or (2,) for one normal) a planar face keeps when it is projected to 2D:
    all but the one its normal is most aligned with."""
    return _KEPT_AXES[np.argmax(np.abs(normals), axis=-1)]


def project_2d(face: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """2D coordinates of a planar face: drop the axis its normal is most aligned with."""
    return face[:, plane_axes(normal)]


def triangulate_face(face: np.ndarray, normal: np.ndarray | None = None) -> np.ndarray:
    """Triangles (k, 3) of vertex indices into a planar ``face`` (earcut), wound like the face."""
    n = len(face)
    if n == 3:
        return np.array([[0, 1, 2]], dtype=np.int64)
    if normal is None:
        normal, _ = face_plane(face)
    p2 = project_2d(face, normal)
    tri = mapbox_earcut.triangulate_float64(p2, np.array([n], dtype=np.uint32)).astype(np.int64).reshape(-1, 3)
    if len(tri):
        a, b, c = face[tri[:, 0]], face[tri[:, 1]], face[tri[:, 2]]
        flip = np.cross(b - a, c - a) @ normal < 0
        tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def _quad_triangles(v: np.ndarray, start: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two triangles per quad (starting at ``start``), and which quads could not be split (non-simple)."""
    i = start[:, None] + np.arange(4)
    a, b, c, d = (v[i[:, k]] for k in range(4))

    def up(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", np.cross(q - p, r - p), normal) > 2 * _EPS_AREA

    diag02 = up(a, b, c) & up(a, c, d)
    diag13 = up(b, c, d) & up(b, d, a)
    tri = np.where(diag02[:, None, None], i[:, [[0, 1, 2], [0, 2, 3]]], i[:, [[1, 2, 3], [1, 3, 0]]])
    return tri, ~(diag02 | diag13)


def _cdt_triangles(v: np.ndarray, starts: np.ndarray, sizes: np.ndarray, normals: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constrained Delaunay triangles (GEOS, all faces in one call) of the faces starting at ``starts``: unlike
    earcut no zero-area slivers along runs of collinear vertices. Returns (triangles as rows of ``v``, their
    face's position in ``starts``, mask of the faces left to earcut: not simple in 2D or not matched back)."""
    failed = np.zeros(len(starts), bool)
    if len(starts) == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64), failed
    fid = np.repeat(np.arange(len(starts)), sizes)
    rows = np.repeat(starts, sizes) + np.arange(len(fid)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    xy = np.take_along_axis(v[rows], plane_axes(normals)[fid], axis=1)
    polys = shapely.polygons(shapely.linearrings(xy, indices=fid))
    good = np.flatnonzero(shapely.is_valid(polys))
    failed[:] = True
    failed[good] = False
    parts, pidx = shapely.get_parts(shapely.constrained_delaunay_triangles(polys[good]), return_index=True)
    corners = shapely.get_coordinates(parts).reshape(-1, 4, 2)[:, :3].reshape(-1, 2)
    owner = good[pidx]
    keys = np.concatenate([np.column_stack([fid, xy]), np.column_stack([np.repeat(owner, 3), corners])])
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    row_of = np.full(inv.max() + 1, -1)
    row_of[inv[: len(fid)]] = rows
    tri = row_of[inv[len(fid):]].reshape(-1, 3)
    lost = np.unique(owner[(tri < 0).any(axis=1)])
    failed[lost] = True
    keep = ~np.isin(owner, lost)
    tri, owner = tri[keep], owner[keep]
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), normals[owner]) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri, owner, failed


def triangulate(faces: Sequence[np.ndarray]) -> TriangleMesh:
    """All faces of a solid as one triangle mesh (see the module docstring)."""
    index = np.array([k for k, f in enumerate(faces) if len(f) >= 3], dtype=np.int64)
    faces = [np.asarray(faces[k], dtype=np.float64) for k in index]
    if not faces:
        return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3)), np.zeros(0, np.int64))
    sizes = np.array([len(f) for f in faces])
    starts, nxt = ring_rows(sizes)
    v = np.concatenate(faces)
    normals = unit_rows(newell_vectors(v, np.repeat(np.arange(len(faces)), sizes), nxt, len(faces)))
    ok = normals.any(axis=1)
    tris, owner = [], []
    tri3 = np.flatnonzero(ok & (sizes == 3))
    tris.append(starts[tri3, None] + np.arange(3))
    owner.append(tri3)
    quad = np.flatnonzero(ok & (sizes == 4))
    qt, bad = _quad_triangles(v, starts[quad], normals[quad])
    tris.append(qt[~bad].reshape(-1, 3))
    owner.append(np.repeat(quad[~bad], 2))
    large = np.r_[quad[bad], np.flatnonzero(ok & (sizes > 4))].astype(np.int64)
    ct, cowner, failed = _cdt_triangles(v, starts[large], sizes[large], normals[large])
    tris.append(ct)
    owner.append(large[cowner])
    for k in large[failed]:
        t = triangulate_face(faces[k], normals[k])
        tris.append(t + starts[k])
        owner.append(np.full(len(t), k))
    tri = np.concatenate(tris).astype(np.int64)
    face = np.concatenate(owner).astype(np.int64)
    order = np.argsort(face, kind="stable")  # triangles in face order (deterministic output, like the faces)
    return TriangleMesh(v, tri[order], np.repeat(normals, sizes, axis=0), index[face[order]])


class DistanceField:
    """Euclidean distance of points to the nearest face of a solid (one open3d scene, queried many times)."""

    def __init__(self, faces: Sequence[np.ndarray]) -> None:
        import open3d as o3d  # here, not at module level: ~160 MB and 0.5 s that every `cim` command would pay

        self._tensor = o3d.core.Tensor
        mesh = triangulate(faces)
        self.empty = len(mesh.triangles) == 0
        self.centre = mesh.positions.mean(axis=0) if not self.empty else np.zeros(3)
        self.scene = o3d.t.geometry.RaycastingScene()
        if not self.empty:
            self.scene.add_triangles(self._tensor((mesh.positions - self.centre).astype(np.float32)),
                                     self._tensor(mesh.triangles.astype(np.uint32)))

    def __call__(self, xyz: np.ndarray) -> np.ndarray:
        """Distances (m) of the points (n, 3); NaN when the solid has no face."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if self.empty or len(xyz) == 0:
            return np.full(len(xyz), np.nan)
        d = self.scene.compute_distance(self._tensor((xyz - self.centre).astype(np.float32)))
        return d.numpy().astype(np.float64)


def point_distances(faces: Sequence[np.ndarray], xyz: np.ndarray) -> np.ndarray:
    """Euclidean distance (m) of each point (n, 3) to the nearest face; NaN when there is no face."""
    return DistanceField(faces)(xyz)


def rms(values: np.ndarray) -> float | None:
    """Root mean square of the finite ``values`` (None when there are none)."""
    v = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(v**2))) if len(v) else None
