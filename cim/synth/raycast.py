"""Ray casting against the scene (open3d ``RaycastingScene``) and the lidar return model shared by ALS and MLS.

Opaque surfaces (terrain, buildings, cars, poles, trunks) stop a pulse. Tree crowns are volumes: a pulse that
enters a crown gives 0-3 returns spread through the foliage it crosses and goes on to the opaque surface behind
with a probability that falls with the foliage depth, which makes the multiple returns of real ALS/MLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import open3d as o3d

from cim.synth.scene import (
    BUILDING_FLOOR,
    CAR,
    CROWN_COLOUR,
    POLE,
    ROOF,
    WALL,
    HIGH_NOISE,
    HIGH_VEG,
    LOW_NOISE,
    LOW_VEG,
    MED_VEG,
    TRUNK,
    Mesh,
    Scene,
    hash_noise,
)

MAX_VEG_RETURNS = 3
#: probability that a pulse crosses a crown through a gap without any foliage return
CROWN_GAP = 0.12
#: mean foliage depth (m) between two vegetation returns
FOLIAGE_RETURN_SPACING = 2.5
#: foliage depth (m) over which the chance of reaching the surface behind falls by 1/e
FOLIAGE_EXTINCTION = 4.0


def _raycasting_scene(*meshes: Mesh) -> o3d.t.geometry.RaycastingScene:
    """One open3d scene; mesh ``k`` becomes geometry id ``k`` (empty meshes get an id too, with no triangles)."""
    scene = o3d.t.geometry.RaycastingScene()
    for mesh in meshes:
        vertices = mesh.vertices if len(mesh.triangles) else np.zeros((3, 3))
        triangles = mesh.triangles if len(mesh.triangles) else np.zeros((0, 3), np.int32)
        scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                            o3d.core.Tensor(triangles.astype(np.uint32)))
    return scene


def _normals(mesh: Mesh) -> np.ndarray:
    v, t = mesh.vertices, mesh.triangles
    if not len(t):
        return np.zeros((0, 3))
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


@dataclass
class Hits:
    """Closest opaque hit and first crown crossing of each ray (``inf``/``-1`` where none)."""

    t_opaque: np.ndarray  # (n,) float64
    tri: np.ndarray  # (n,) int64 index into Caster.opaque
    t_enter: np.ndarray  # (n,) float64 crown entry (inf: none)
    t_exit: np.ndarray  # (n,) float64 crown exit
    crown: np.ndarray  # (n,) int64 tree index or -1


class Caster:
    """Casts rays (local frame) against one scene's opaque mesh and crown volumes."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.opaque = scene.opaque_mesh
        self.crowns = scene.crown_mesh
        self._opaque_rc = _raycasting_scene(self.opaque)
        self._crown_rc = _raycasting_scene(self.crowns)
        self._crown_centres, self._crown_radii, _ = scene.crown_arrays

    @cached_property
    def opaque_normals(self) -> np.ndarray:
        """Unit normals (m, 3) of the opaque triangles (winding as built: outward for solids, up for terrain)."""
        return _normals(self.opaque)

    @cached_property
    def crown_normals(self) -> np.ndarray:
        """Unit outward normals of the crown mesh triangles."""
        return _normals(self.crowns)

    @cached_property
    def _render_rc(self) -> o3d.t.geometry.RaycastingScene:
        return _raycasting_scene(self.opaque, self.crowns)

    @staticmethod
    def _cast_full(rc: o3d.t.geometry.RaycastingScene, origins: np.ndarray, dirs: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rays = o3d.core.Tensor(np.hstack([origins, dirs]).astype(np.float32))
        ans = rc.cast_rays(rays)
        t = ans["t_hit"].numpy().astype(np.float64)
        prim = ans["primitive_ids"].numpy().astype(np.int64)
        geometry = ans["geometry_ids"].numpy().astype(np.int64)
        miss = ~np.isfinite(t)
        prim[miss] = -1
        geometry[miss] = -1
        return t, prim, geometry

    @classmethod
    def _cast(cls, rc: o3d.t.geometry.RaycastingScene, origins: np.ndarray, dirs: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        t, prim, _ = cls._cast_full(rc, origins, dirs)
        return t, prim

    def cast_visible(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, triangle, is_crown) of the first surface seen, crowns opaque (one cast, for rendering)."""
        t, prim, geometry = self._cast_full(self._render_rc, origins, dirs)
        return t, prim, geometry == 1

    def cast_opaque(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(t, triangle) of the closest opaque surface along unit ``dirs`` from ``origins`` (local frame)."""
        return self._cast(self._opaque_rc, origins, dirs)

    def cast_crowns(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(t, triangle of crown_mesh) of the closest crown surface."""
        if not len(self.crowns.triangles):
            return np.full(len(origins), np.inf), np.full(len(origins), -1, np.int64)
        return self._cast(self._crown_rc, origins, dirs)

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> Hits:
        """Opaque hit plus the analytic entry/exit of the first crown ellipsoid the ray meets."""
        t_opaque, tri = self.cast_opaque(origins, dirs)
        t_crown, ctri = self.cast_crowns(origins, dirs)
        crown = np.where(ctri >= 0, self.crowns.obj[np.maximum(ctri, 0)], -1).astype(np.int64)
        t_enter = np.full(len(origins), np.inf)
        t_exit = np.full(len(origins), np.inf)
        sel = np.flatnonzero(crown >= 0)
        if len(sel):
            c = self._crown_centres[crown[sel]]
            r = self._crown_radii[crown[sel]]
            o = (origins[sel] - c) / r
            d = dirs[sel] / r
            a = np.einsum("ij,ij->i", d, d)
            b = np.einsum("ij,ij->i", o, d)
            cc = np.einsum("ij,ij->i", o, o) - 1.0
            disc = np.maximum(b * b - a * cc, 0.0)
            root = np.sqrt(disc)
            t0 = (-b - root) / a
            t1 = (-b + root) / a
            t_enter[sel] = np.maximum(np.minimum(t0, t_crown[sel]), 0.0)
            t_exit[sel] = np.maximum(t1, t_crown[sel])
        return Hits(t_opaque, tri, t_enter, t_exit, crown)


@dataclass
class Returns:
    """Returns of a batch of pulses, flattened pulse by pulse (first return first)."""

    pulse: np.ndarray  # (m,) index of the pulse
    t: np.ndarray  # (m,) range along the pulse (m), noise not yet added
    return_number: np.ndarray  # (m,) u1
    number_of_returns: np.ndarray  # (m,) u1
    vegetation: np.ndarray  # (m,) bool: a foliage return
    tri: np.ndarray  # (m,) opaque triangle (-1 for foliage)
    crown: np.ndarray  # (m,) tree index (-1 for opaque)


def lidar_returns(hits: Hits, rng: np.random.Generator, max_range: float = np.inf) -> Returns:
    """Turn ray hits into discrete returns with the foliage model (see module docstring)."""
    n = len(hits.t_opaque)
    in_crown = (hits.crown >= 0) & (hits.t_enter < np.minimum(hits.t_opaque, max_range))
    far = np.minimum(np.minimum(hits.t_exit, hits.t_opaque), max_range)
    depth = np.zeros(n)
    np.subtract(far, hits.t_enter, out=depth, where=in_crown)
    gap = rng.random(n) < CROWN_GAP
    k = np.where(in_crown & ~gap, np.minimum(1 + rng.poisson(depth / FOLIAGE_RETURN_SPACING), MAX_VEG_RETURNS), 0)
    u = np.sort(rng.random((n, MAX_VEG_RETURNS)) ** 1.5, axis=1)
    veg_t = hits.t_enter[:, None] + depth[:, None] * u
    veg_valid = np.arange(MAX_VEG_RETURNS)[None, :] < k[:, None]
    passes = rng.random(n) < np.exp(-depth / FOLIAGE_EXTINCTION)
    opaque_valid = np.isfinite(hits.t_opaque) & (hits.t_opaque <= max_range) & ((k == 0) | passes)
    t_all = np.column_stack([veg_t, hits.t_opaque])
    valid = np.column_stack([veg_valid, opaque_valid])
    count = valid.sum(axis=1)
    number = np.cumsum(valid, axis=1)
    rows, cols = np.nonzero(valid)
    is_veg = cols < MAX_VEG_RETURNS
    return Returns(
        pulse=rows,
        t=t_all[rows, cols],
        return_number=number[rows, cols].astype(np.uint8),
        number_of_returns=count[rows].astype(np.uint8),
        vegetation=is_veg,
        tri=np.where(is_veg, -1, hits.tri[rows]),
        crown=np.where(is_veg, hits.crown[rows], -1),
    )


def classify(scene: Scene, caster: Caster, points: np.ndarray, ret: Returns) -> np.ndarray:
    """ASPRS class truth of returns at local ``points``: surface class, vegetation by height above ground."""
    cls = np.where(ret.vegetation, HIGH_VEG, caster.opaque.cls[np.maximum(ret.tri, 0)]).astype(np.uint8)
    veg = ret.vegetation | ((ret.tri >= 0) & (caster.opaque.kind[np.maximum(ret.tri, 0)] == TRUNK))
    if veg.any():
        h = points[veg, 2] - scene.terrain_height_local(points[veg, 0], points[veg, 1])
        cls[veg] = np.where(h < 0.5, LOW_VEG, np.where(h < 2.0, MED_VEG, HIGH_VEG))
    return cls


def intensity(caster: Caster, reflectance: np.ndarray, dirs: np.ndarray, ret: Returns, reference_range: float,
              rng: np.random.Generator) -> np.ndarray:
    """Return intensity (u16): reflectance x incidence x weak range falloff, shared among returns, speckled.
    Foliage returns have reflectance 0.5 and a mean incidence factor."""
    tri = np.maximum(ret.tri, 0)
    refl = np.where(ret.vegetation, 0.5, reflectance)
    cos_inc = np.where(ret.vegetation, 0.6, np.abs(np.einsum("ij,ij->i", caster.opaque_normals[tri], dirs)))
    falloff = np.clip(reference_range / np.maximum(ret.t, 0.1), 0.25, 4.0) ** 0.5
    share = 1.0 / ret.number_of_returns
    value = refl * (0.3 + 0.7 * cos_inc) * falloff * share * (1.0 + 0.05 * rng.standard_normal(len(ret.t)))
    return np.clip(value * 80000.0, 1, 65535).astype(np.uint16)


def add_outliers(ret: Returns, fraction: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pick single returns to turn into outliers: their indices into ``ret`` and their classes, half
    :data:`LOW_NOISE` (behind the surface, multipath) and half :data:`HIGH_NOISE` (in the air).
    :func:`outlier_ranges` gives their new ranges."""
    first = np.flatnonzero((ret.return_number == 1) & (ret.number_of_returns == 1))
    count = int(round(fraction * len(first)))
    if count == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    pick = np.sort(rng.choice(first, size=count, replace=False))
    low = rng.random(count) < 0.5
    return pick, np.where(low, LOW_NOISE, HIGH_NOISE).astype(np.uint8)


def outlier_ranges(t: np.ndarray, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New ranges for outliers: 1.5-6 m beyond the surface (low noise) or 10-90 % of the way (high noise)."""
    low = classes == LOW_NOISE
    return np.where(low, t + rng.uniform(1.5, 6.0, len(t)), t * rng.uniform(0.1, 0.9, len(t)))


#: object_id ranges: 0 terrain (and noise), building n -> n (its id is B%04d), then trees, cars, poles
TREE_IDS, CAR_IDS, POLE_IDS = 100_000, 200_000, 300_000


def object_ids(caster: Caster, ret: Returns) -> np.ndarray:
    """Per-return object truth (u32): 0 terrain, ``n`` building ``Bnnnn``, ``100000 + k`` tree or hedge element
    ``k`` (0-based, crown or trunk), ``200000 + k`` car ``k``, ``300000 + k`` pole ``k``."""
    tri = np.maximum(ret.tri, 0)
    kind = caster.opaque.kind[tri]
    obj = caster.opaque.obj[tri].astype(np.int64)
    base = np.select([kind == WALL, kind == ROOF, kind == BUILDING_FLOOR, kind == TRUNK, kind == CAR, kind == POLE],
                     [obj + 1, obj + 1, obj + 1, TREE_IDS + obj, CAR_IDS + obj, POLE_IDS + obj], 0)
    return np.where(ret.vegetation, TREE_IDS + ret.crown, base).astype(np.uint32)


def simulate_returns(scene: Scene, caster: Caster, origins: np.ndarray, dirs: np.ndarray, rng: np.random.Generator,
                     reference_range: float, range_noise: float, outlier_fraction: float,
                     max_range: float = np.inf) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Cast pulses (local frame) and make the returns: LAS attributes, and truth the caller may use.

    Returns ``(points, aux)``: ``points`` holds local x, y, z (range noise and outliers applied),
    classification, intensity, return_number, number_of_returns; ``aux`` holds ``pulse`` (index of each
    return's pulse), ``true`` (noise-free local points), ``tri`` (opaque triangle or -1), ``vegetation`` and
    ``albedo`` (true surface colour, foliage green for foliage returns) and, with the ``point_ids`` option,
    ``object_id`` (see :func:`object_ids`).
    """
    hits = caster.cast(origins, dirs)
    ret = lidar_returns(hits, rng, max_range)
    d = dirs[ret.pulse]
    true_points = origins[ret.pulse] + d * ret.t[:, None]
    cls = classify(scene, caster, true_points, ret)
    albedo = np.empty((len(ret.t), 3))
    reflectance = np.empty(len(ret.t))
    opaque = ~ret.vegetation
    albedo[opaque], reflectance[opaque] = scene.surface(true_points[opaque], caster.opaque, ret.tri[opaque])
    albedo[ret.vegetation] = CROWN_COLOUR * (0.7 + 0.6 * hash_noise(true_points[ret.vegetation], 2.5))[:, None]
    inten = intensity(caster, reflectance, d, ret, reference_range, rng)
    t = ret.t + range_noise * rng.standard_normal(len(ret.t))
    pick, noise_cls = add_outliers(ret, outlier_fraction, rng)
    t[pick] = outlier_ranges(ret.t[pick], noise_cls, rng)
    cls[pick] = noise_cls
    points = origins[ret.pulse] + d * t[:, None]
    out = {
        "x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "classification": cls, "intensity": inten,
        "return_number": ret.return_number, "number_of_returns": ret.number_of_returns,
    }
    aux = {"pulse": ret.pulse, "true": true_points, "tri": ret.tri, "vegetation": ret.vegetation, "albedo": albedo}
    if scene.config.point_ids:
        aux["object_id"] = object_ids(caster, ret)
        aux["object_id"][pick] = 0
    return out, aux
