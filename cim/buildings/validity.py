"""Geometric validity of a building solid (ISO 19107 style, the checks val3dity makes for a single shell).

Checks, each reported with a val3dity-like code so users can compare:
  * 101 too few points in a ring, 104 ring self-intersection (2D, in the face plane)
  * 203 non-planar face (vertex-to-plane distance > ``planarity_tol``)
  * 302 shell not closed (an edge used once), 303 non-manifold edge (used > 2 times)
  * 307 inconsistent or inward orientation (an edge used twice in the same direction, or negative volume)
  * 306 self-intersection between non-adjacent faces (triangle-triangle tests with a small tolerance)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import Polygon

from cim.buildings.mesh import project_2d, face_plane, triangulate
from cim.cityjson import BuildingGeometry


@dataclass
class Validity:
    """Result of :func:`check_solid`: ``valid`` and the list of (code, message) problems."""

    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def codes(self) -> list[int]:
        return sorted({c for c, _ in self.errors})


def signed_volume(faces: Sequence[np.ndarray]) -> float:
    """Volume enclosed by a closed shell (positive when faces are oriented outward). Computed about the shell's
    centre: about the CRS origin, gaps below the snap tolerance (10⁻⁴ m² of unmatched area) times 10⁵–10⁶ m of
    lever arm would add cubic metres."""
    centre = np.concatenate(faces).mean(axis=0)
    vol = 0.0
    for f in (np.asarray(f, dtype=np.float64) - centre for f in faces):
        a = f[0]
        b, c = f[1:-1], f[2:]
        vol += float(np.einsum("ij,ij->i", np.broadcast_to(a, b.shape), np.cross(b, c)).sum())
    return vol / 6.0


def check_solid(geom: BuildingGeometry | Sequence[np.ndarray], *, planarity_tol: float = 0.01,
                snap_tol: float = 0.001, check_intersections: bool = True) -> Validity:
    """Validate one closed shell given as faces (outer rings, outward CCW); see the module docstring."""
    faces = [np.asarray(f, dtype=np.float64) for f in (geom.faces if isinstance(geom, BuildingGeometry) else geom)]
    v = Validity()
    if len(faces) < 4:
        v.errors.append((301, f"only {len(faces)} faces"))
        return v
    rings, _ = _vertex_rings(faces, snap_tol)
    for i, (f, r) in enumerate(zip(faces, rings)):
        if len(f) < 3 or len(np.unique(r)) < 3:
            v.errors.append((101, f"face {i}: fewer than 3 distinct vertices"))
            continue
        if np.any(r == np.roll(r, 1)):
            v.errors.append((102, f"face {i}: consecutive duplicate vertices"))
        normal, d = face_plane(f)
        if not normal.any():
            v.errors.append((204, f"face {i}: degenerate (zero area)"))
            continue
        dist = np.abs(f @ normal - d).max()
        if dist > planarity_tol:
            v.errors.append((203, f"face {i}: non-planar ({dist:.3f} m)"))
        if not Polygon(project_2d(f, normal)).is_valid:
            v.errors.append((104, f"face {i}: ring self-intersects"))
    if v.errors:
        return v
    # edges: closedness, manifoldness, orientation
    edges = _edges(rings)
    directed, dcount = np.unique(edges, axis=0, return_counts=True)
    if (dcount > 1).any():
        v.errors.append((307, f"{int((dcount > 1).sum())} edges used twice in the same direction"))
    und = np.sort(edges, axis=1)
    _, ucount = np.unique(und, axis=0, return_counts=True)
    if (ucount == 1).any():
        v.errors.append((302, f"shell not closed: {int((ucount == 1).sum())} free edges"))
    if (ucount > 2).any():
        v.errors.append((303, f"{int((ucount > 2).sum())} non-manifold edges"))
    if v.errors:
        return v
    vol = signed_volume(faces)
    if vol <= 0:
        v.errors.append((307, f"faces oriented inward (volume {vol:.3f})"))
        return v
    if check_intersections:
        n_hit = _self_intersections(faces, rings, tol=snap_tol)
        if n_hit:
            v.errors.append((306, f"{n_hit} pairs of faces intersect"))
    return v


def _vertex_rings(faces: Sequence[np.ndarray], snap_tol: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Each face as a ring of vertex ids (vertices within ``snap_tol`` are one), and the ids' grid keys."""
    key = np.rint(np.concatenate(faces) / snap_tol).astype(np.int64)
    keys, vid = np.unique(key, axis=0, return_inverse=True)
    return np.split(vid.reshape(-1), np.cumsum([len(f) for f in faces])[:-1]), keys


def _edges(rings: Sequence[np.ndarray]) -> np.ndarray:
    """Directed edges (k, 2) of vertex-id rings."""
    return np.concatenate([np.stack([r, np.roll(r, -1)], axis=1) for r in rings])


def nonmanifold_edges(faces: Sequence[np.ndarray], snap_tol: float = 0.001) -> np.ndarray:
    """End points (k, 2, 3) of the edges shared by more than two faces (val3dity 303)."""
    rings, keys = _vertex_rings([np.asarray(f, dtype=np.float64) for f in faces], snap_tol)
    und, count = np.unique(np.sort(_edges(rings), axis=1), axis=0, return_counts=True)
    return keys[und[count > 2]] * snap_tol


def _self_intersections(faces: list[np.ndarray], rings: list[np.ndarray], tol: float) -> int:
    """Number of pairs of faces that share no vertex yet intersect (vectorised triangle-triangle tests)."""
    mesh = triangulate(faces)
    T = mesh.positions[mesh.triangles]
    own = mesh.face
    from scipy import sparse

    nv = int(max(r.max() for r in rings)) + 1
    rows = np.concatenate([np.full(len(r), i) for i, r in enumerate(rings)])
    inc = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, np.concatenate(rings))), shape=(len(faces), nv))
    shared = (inc @ inc.T).tocsr()  # faces sharing a vertex: the edge checks cover them
    lo, hi = T.min(axis=1) - tol, T.max(axis=1) + tol
    # candidate pairs: overlapping bounding boxes in plan (R-tree), then in height
    boxes = shapely.box(lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1])
    ia, ib = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    keep = (ia < ib) & (own[ia] != own[ib]) & (lo[ia, 2] <= hi[ib, 2]) & (hi[ia, 2] >= lo[ib, 2])
    ia, ib = ia[keep], ib[keep]
    if len(ia):
        keep = np.asarray(shared[own[ia], own[ib]]).ravel() == 0
        ia, ib = ia[keep], ib[keep]
    if len(ia) == 0:
        return 0
    hit = _tri_tri_intersect(T[ia], T[ib], tol)
    pairs = {(min(a, b), max(a, b)) for a, b in zip(own[ia][hit].tolist(), own[ib][hit].tolist())}
    return len(pairs)


def _tri_tri_intersect(t1: np.ndarray, t2: np.ndarray, tol: float) -> np.ndarray:
    """For pairs of triangles (p, 3, 3): True where they intersect (separating axis test with ``tol`` slack)."""
    e1 = np.roll(t1, -1, axis=1) - t1
    e2 = np.roll(t2, -1, axis=1) - t2
    axes = [np.cross(e1[:, 0], e1[:, 1])[:, None], np.cross(e2[:, 0], e2[:, 1])[:, None]]
    axes.append(np.cross(e1[:, :, None, :], e2[:, None, :, :]).reshape(len(t1), 9, 3))
    ax = np.concatenate(axes, axis=1)  # (p, 11, 3)
    norm = np.linalg.norm(ax, axis=2)
    usable = norm > 1e-12
    ax = ax / np.where(usable, norm, 1.0)[..., None]
    p1 = np.einsum("pkc,pvc->pkv", ax, t1)
    p2 = np.einsum("pkc,pvc->pkv", ax, t2)
    separated = (p1.max(axis=2) < p2.min(axis=2) + tol) | (p2.max(axis=2) < p1.min(axis=2) + tol)
    return ~np.any(separated & usable, axis=1)
