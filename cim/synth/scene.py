"""The synthetic city block: layout (streets, buildings, trees, cars, poles), terrain, and its triangle meshes.

Everything is built in a *local* frame (x, y from the block's south-west corner, z above ``base_height``) so
open3d's float32 ray casting stays millimetre-exact; the public truth (:class:`Building` faces and footprints,
:meth:`Scene.terrain_height`) is given in the output CRS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import mapbox_earcut
import numpy as np
from shapely.geometry import Polygon

from cim.synth import roofs
from cim.synth.config import SynthConfig

# --- classes, surface kinds, materials ----------------------------------------------------------------------------

GROUND, LOW_VEG, MED_VEG, HIGH_VEG, BUILDING, UNCLASSIFIED, LOW_NOISE, HIGH_NOISE = 2, 3, 4, 5, 6, 1, 7, 18
TERRAIN, WALL, ROOF, BUILDING_FLOOR, CAR, POLE, TRUNK, CROWN = range(8)  # surface kinds (per triangle)
ROAD, SIDEWALK, GRASS, MARKING = range(4)  # terrain materials

#: albedo (linear 0..1 RGB) and lidar reflectance of the terrain materials
TERRAIN_ALBEDO = np.array([[0.20, 0.20, 0.22], [0.60, 0.58, 0.54], [0.30, 0.50, 0.19], [0.92, 0.92, 0.90]])
TERRAIN_REFLECTANCE = np.array([0.12, 0.30, 0.45, 0.60])
#: lidar reflectance of the other surface kinds (terrain uses TERRAIN_REFLECTANCE)
KIND_REFLECTANCE = np.array([0.0, 0.35, 0.25, 0.2, 0.50, 0.30, 0.30, 0.50])
WINDOW_ALBEDO = np.array([0.12, 0.15, 0.20])
WINDOW_REFLECTANCE = 0.08
WALL_COLOURS = np.array([[0.85, 0.80, 0.70], [0.75, 0.55, 0.45], [0.90, 0.88, 0.84], [0.70, 0.72, 0.76],
                         [0.86, 0.74, 0.52], [0.62, 0.66, 0.58], [0.80, 0.62, 0.62]])
ROOF_COLOURS = np.array([[0.55, 0.22, 0.15], [0.30, 0.30, 0.33], [0.42, 0.27, 0.20], [0.20, 0.22, 0.26]])
FLAT_ROOF_COLOUR = np.array([0.45, 0.45, 0.43])
CAR_COLOURS = np.array([[0.75, 0.10, 0.10], [0.10, 0.20, 0.60], [0.85, 0.85, 0.85], [0.08, 0.08, 0.08],
                        [0.55, 0.57, 0.60], [0.10, 0.45, 0.25], [0.95, 0.80, 0.10]])
POLE_COLOUR = np.array([0.35, 0.37, 0.36])
TRUNK_COLOUR = np.array([0.35, 0.25, 0.16])
CROWN_COLOUR = np.array([0.20, 0.42, 0.14])


# --- scene objects ------------------------------------------------------------------------------------------------


@dataclass
class Building:
    """A true building. Coordinates are in the output CRS (``faces`` closed solid, outward CCW rings)."""

    id: str
    footprint: Polygon
    roof_type: int
    ground_height: float
    eave_height: float
    ridge_height: float
    kind: str  # "detached", "row", "L", "U"
    faces: list[np.ndarray]
    semantics: list[str]
    wall_colour: np.ndarray = field(repr=False)
    roof_colour: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Tree:
    """A tree (or hedge element): trunk up to the crown centre, ellipsoid crown. Local coordinates."""

    x: float
    y: float
    ground: float
    crown_z: float
    radius: float
    crown_height: float  # half height of the crown ellipsoid
    trunk_radius: float


@dataclass(frozen=True)
class Car:
    """A parked car (two boxes). Local coordinates; ``angle`` is the direction of its length (deg from +x)."""

    x: float
    y: float
    ground: float
    angle: float
    colour: int


@dataclass(frozen=True)
class Pole:
    """A street-light pole (octagonal prism). Local coordinates."""

    x: float
    y: float
    ground: float
    height: float
    radius: float


@dataclass
class Mesh:
    """Triangles in the local frame with per-triangle truth attributes."""

    vertices: np.ndarray  # (n, 3) float64
    triangles: np.ndarray  # (m, 3) int32
    cls: np.ndarray  # (m,) u1 ASPRS class of the surface
    kind: np.ndarray  # (m,) u1 surface kind
    colour: np.ndarray  # (m, 3) f4 albedo
    obj: np.ndarray  # (m,) i4 object index (building / tree / car / pole index; -1 terrain)
    wall_tangent: np.ndarray  # (m, 2) f4 horizontal tangent of walls (for the window texture)
    base_z: np.ndarray  # (m,) f4 local ground height of the object

    @staticmethod
    def empty() -> Mesh:
        return _mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int32), 0, 0, np.zeros(3), 0, 0.0)

    @staticmethod
    def concat(meshes: list[Mesh]) -> Mesh:
        if not meshes:
            return Mesh.empty()
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return Mesh(
            np.concatenate([m.vertices for m in meshes]),
            np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]).astype(np.int32),
            *(np.concatenate([getattr(m, n) for m in meshes]) for n in
              ("cls", "kind", "colour", "obj", "wall_tangent", "base_z")),
        )


def _mesh(vertices: np.ndarray, triangles: np.ndarray, cls: int, kind: int, colour: np.ndarray, obj: int,
          base_z: float, tangent: np.ndarray | None = None) -> Mesh:
    m = len(triangles)
    return Mesh(
        np.asarray(vertices, dtype=np.float64), np.asarray(triangles, dtype=np.int32),
        np.full(m, cls, np.uint8), np.full(m, kind, np.uint8), np.tile(np.asarray(colour, np.float32), (m, 1)),
        np.full(m, obj, np.int32),
        np.tile(np.asarray(tangent if tangent is not None else (0.0, 0.0), np.float32), (m, 1)),
        np.full(m, base_z, np.float32),
    )


def triangulate_polygon(ring: np.ndarray) -> np.ndarray:
    """Triangles (k, 3) indexing a planar 3D polygon's vertices (ear clipping in its dominant plane)."""
    normal = roofs.newell_normal(ring)
    drop = int(np.argmax(np.abs(normal)))
    flat = np.delete(ring, drop, axis=1)
    tris = mapbox_earcut.triangulate_float64(flat, np.array([len(ring)], dtype=np.uint32)).reshape(-1, 3)
    # keep the polygon's orientation: triangle normals along the polygon normal
    a, b, c = ring[tris[:, 0]], ring[tris[:, 1]], ring[tris[:, 2]]
    flip = np.cross(b - a, c - a) @ normal < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return tris


def _prism(x: float, y: float, z0: float, z1: float, radius: float, sides: int = 8) -> tuple[np.ndarray, np.ndarray]:
    ang = np.arange(sides) * 2 * np.pi / sides
    ring = np.column_stack([x + radius * np.cos(ang), y + radius * np.sin(ang)])
    verts = np.vstack([np.column_stack([ring, np.full(sides, z0)]), np.column_stack([ring, np.full(sides, z1)])])
    i = np.arange(sides)
    j = (i + 1) % sides
    sides_tris = np.vstack([np.column_stack([i, j, j + sides]), np.column_stack([i, j + sides, i + sides])])
    top = np.column_stack([np.full(sides - 2, sides), sides + i[1:-1], sides + i[2:]])
    return verts, np.vstack([sides_tris, top])


def _box(cx: float, cy: float, z0: float, length: float, width: float, height: float, angle: float
         ) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    lx, ly = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    corners = np.array([-lx - ly, lx - ly, lx + ly, -lx + ly]) + [cx, cy]
    verts = np.vstack([np.column_stack([corners, np.full(4, z0)]), np.column_stack([corners, np.full(4, z0 + height)])])
    tris = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
                     [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return verts, tris


_SPHERE_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _unit_sphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere vertices and triangles (outward)."""
    if subdivisions not in _SPHERE_CACHE:
        t = (1 + 5 ** 0.5) / 2
        v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                      [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
        f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                      [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
                      [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
        for _ in range(subdivisions):
            edges = np.sort(np.vstack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
            uniq, inv = np.unique(edges, axis=0, return_inverse=True)
            mids = (v[uniq[:, 0]] + v[uniq[:, 1]]) / 2
            mid_idx = len(v) + inv.reshape(3, -1).T  # per face: mid of (0,1), (1,2), (2,0)
            v = np.vstack([v, mids])
            a, b, c = f[:, 0], f[:, 1], f[:, 2]
            ab, bc, ca = mid_idx[:, 0], mid_idx[:, 1], mid_idx[:, 2]
            f = np.vstack([np.column_stack([a, ab, ca]), np.column_stack([b, bc, ab]),
                           np.column_stack([c, ca, bc]), np.column_stack([ab, bc, ca])])
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        _SPHERE_CACHE[subdivisions] = (v, f)
    return _SPHERE_CACHE[subdivisions]


# --- the scene ----------------------------------------------------------------------------------------------------


class Scene:
    """The true city block. Build it with :func:`build_scene`."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.origin = np.array([config.origin[0], config.origin[1], config.base_height])
        e = config.extent
        half = config.street_spacing / 2
        #: local coordinates of the E-W street centrelines (y) and N-S street centrelines (x)
        streets = np.arange(half, e - 10.0, config.street_spacing)
        if not len(streets):  # a block smaller than half the spacing still gets one street each way
            streets = np.array([e / 2])
        self.streets_y = streets
        self.streets_x = streets.copy()
        self.buildings: list[Building] = []
        self.trees: list[Tree] = []
        self.cars: list[Car] = []
        self.poles: list[Pole] = []
        self.embankment: tuple[float, float, float, float] | None = None  # plateau x0, y0, x1, y1 (local)
        rng = np.random.default_rng([config.seed, 0])
        self._undulation_phase = rng.uniform(0, 2 * np.pi, 2)

    # --- terrain ----------------------------------------------------------------------------------------------

    @property
    def road_half(self) -> float:
        return self.config.road_width / 2

    def _road_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        mask = np.zeros(np.broadcast(x, y).shape, dtype=bool)
        for s in self.streets_y:
            mask |= np.abs(y - s) < self.road_half
        for s in self.streets_x:
            mask |= np.abs(x - s) < self.road_half
        return mask

    def _analytic_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Local terrain height of the analytic model (the mesh samples it; truth is the mesh)."""
        c = self.config
        z = c.slope[0] * x + c.slope[1] * y
        z = z + c.undulation * np.sin(2 * np.pi * x / 350.0 + self._undulation_phase[0]) * np.cos(
            2 * np.pi * y / 460.0 + self._undulation_phase[1])
        z = z + np.where(self._road_mask(x, y), 0.0, c.kerb_height)
        if self.embankment is not None:
            x0, y0, x1, y1 = self.embankment
            run = c.embankment_height * c.embankment_slope
            d = np.minimum(np.minimum(x - (x0 - run), (x1 + run) - x), np.minimum(y - (y0 - run), (y1 + run) - y))
            z = z + c.embankment_height * np.clip(d / run, 0.0, 1.0)
        return z

    def _breaklines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        bx = [s + d for s in self.streets_x for d in (-self.road_half, self.road_half)]
        by = [s + d for s in self.streets_y for d in (-self.road_half, self.road_half)]
        ex, ey = [], []
        if self.embankment is not None:
            x0, y0, x1, y1 = self.embankment
            run = self.config.embankment_height * self.config.embankment_slope
            ex, ey = [x0 - run, x0, x1, x1 + run], [y0 - run, y0, y1, y1 + run]
        return np.array(bx), np.array(by), np.array(ex), np.array(ey)

    @cached_property
    def terrain_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xs, ys, heights[j, i]) of the terrain mesh in the local frame, breaklines on their own grid lines."""
        c = self.config
        e = c.extent
        regular = np.append(np.arange(0.0, e, c.terrain_resolution), e)
        bx, by, ex, ey = self._breaklines()
        step = 0.005  # kerbs: two grid lines 1 cm apart make an (almost) vertical step
        xs = np.unique(np.round(np.concatenate([regular, bx - step, bx + step, ex]), 6))
        ys = np.unique(np.round(np.concatenate([regular, by - step, by + step, ey]), 6))
        xs, ys = xs[(xs >= 0) & (xs <= e)], ys[(ys >= 0) & (ys <= e)]
        gx, gy = np.meshgrid(xs, ys)
        return xs, ys, self._analytic_height(gx, gy)

    def terrain_height_local(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Exact height of the terrain mesh at local (x, y) (clamped to the block)."""
        xs, ys, h = self.terrain_grid
        x = np.clip(np.asarray(x, dtype=np.float64), xs[0], xs[-1])
        y = np.clip(np.asarray(y, dtype=np.float64), ys[0], ys[-1])
        i = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, len(xs) - 2)
        j = np.clip(np.searchsorted(ys, y, side="right") - 1, 0, len(ys) - 2)
        fx = (x - xs[i]) / (xs[i + 1] - xs[i])
        fy = (y - ys[j]) / (ys[j + 1] - ys[j])
        z00, z10, z01, z11 = h[j, i], h[j, i + 1], h[j + 1, i], h[j + 1, i + 1]
        lower = fx >= fy  # triangle (00, 10, 11) else (00, 11, 01)
        return np.where(lower, z00 + fx * (z10 - z00) + fy * (z11 - z10), z00 + fy * (z01 - z00) + fx * (z11 - z01))

    def terrain_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True bare-earth height (DHHN2016 m) at easting/northing ``(x, y)`` in the output CRS."""
        return self.terrain_height_local(np.asarray(x) - self.origin[0], np.asarray(y) - self.origin[1]) + self.origin[2]

    def terrain_material(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terrain material code (ROAD, SIDEWALK, GRASS, MARKING) at local (x, y)."""
        x, y = np.asarray(x), np.asarray(y)
        road = self._road_mask(x, y)
        sidewalk = np.zeros(road.shape, dtype=bool)
        marking = np.zeros(road.shape, dtype=bool)
        reach = self.road_half + self.config.sidewalk_width
        # streets along x (at y = s), then along y: a sidewalk beside each, centre markings except at crossings
        for streets, others, across, along in ((self.streets_y, self.streets_x, y, x),
                                               (self.streets_x, self.streets_y, x, y)):
            for s in streets:
                sidewalk |= np.abs(across - s) < reach
                cross = np.zeros(road.shape, dtype=bool)
                for t in others:
                    cross |= np.abs(along - t) < reach
                marking |= (np.abs(across - s) < 0.06) & (np.mod(along, 6.0) < 3.0) & ~cross
        out = np.full(road.shape, GRASS, dtype=np.uint8)
        out[sidewalk] = SIDEWALK
        out[road] = ROAD
        out[road & marking] = MARKING
        return out

    # --- meshes -----------------------------------------------------------------------------------------------

    @cached_property
    def terrain_mesh(self) -> Mesh:
        xs, ys, h = self.terrain_grid
        nx, ny = len(xs), len(ys)
        gx, gy = np.meshgrid(xs, ys)
        verts = np.column_stack([gx.ravel(), gy.ravel(), h.ravel()])
        idx = np.arange(nx * ny).reshape(ny, nx)
        v00, v10, v01, v11 = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
        tris = np.vstack([np.column_stack([v00, v10, v11]), np.column_stack([v00, v11, v01])])
        return _mesh(verts, tris, GROUND, TERRAIN, np.zeros(3), -1, 0.0)

    @cached_property
    def building_mesh(self) -> Mesh:
        parts = []
        for index, b in enumerate(self.buildings):
            base = b.ground_height - self.origin[2]
            for face, sem in zip(b.faces, b.semantics):
                local = face - self.origin
                tris = triangulate_polygon(local)
                n = roofs.newell_normal(local)
                if sem == "WallSurface":
                    kind, colour = WALL, b.wall_colour
                    tangent = np.array([-n[1], n[0]]) / max(np.hypot(n[0], n[1]), 1e-12)
                else:
                    kind = ROOF if sem == "RoofSurface" else BUILDING_FLOOR
                    colour, tangent = b.roof_colour, None
                parts.append(_mesh(local, tris, BUILDING, kind, colour, index, base, tangent))
        return Mesh.concat(parts)

    @cached_property
    def object_mesh(self) -> Mesh:
        """Cars, poles and tree trunks."""
        parts = []
        for index, car in enumerate(self.cars):
            colour = CAR_COLOURS[car.colour]
            v, t = _box(car.x, car.y, car.ground + 0.25, 4.4, 1.8, 0.8, car.angle)
            parts.append(_mesh(v, t, UNCLASSIFIED, CAR, colour, index, car.ground))
            c, s = np.cos(np.radians(car.angle)), np.sin(np.radians(car.angle))
            v, t = _box(car.x - 0.3 * c, car.y - 0.3 * s, car.ground + 1.05, 2.4, 1.6, 0.5, car.angle)
            parts.append(_mesh(v, t, UNCLASSIFIED, CAR, colour * 0.6, index, car.ground))
        for index, pole in enumerate(self.poles):
            v, t = _prism(pole.x, pole.y, pole.ground - 0.2, pole.ground + pole.height, pole.radius)
            parts.append(_mesh(v, t, UNCLASSIFIED, POLE, POLE_COLOUR, index, pole.ground))
        for index, tree in enumerate(self.trees):
            if tree.trunk_radius > 0:
                v, t = _prism(tree.x, tree.y, tree.ground - 0.2, tree.crown_z, tree.trunk_radius)
                parts.append(_mesh(v, t, HIGH_VEG, TRUNK, TRUNK_COLOUR, index, tree.ground))
        return Mesh.concat(parts)

    @cached_property
    def opaque_mesh(self) -> Mesh:
        """Terrain, buildings, cars, poles and trunks: every surface that stops a pulse."""
        return Mesh.concat([self.terrain_mesh, self.building_mesh, self.object_mesh])

    @cached_property
    def crown_mesh(self) -> Mesh:
        """Tree crowns as closed ellipsoid meshes (rendered opaque; for lidar they are volumes)."""
        sv, sf = _unit_sphere(2)
        parts = []
        for index, tree in enumerate(self.trees):
            v = sv * [tree.radius, tree.radius, tree.crown_height] + [tree.x, tree.y, tree.crown_z]
            parts.append(_mesh(v, sf, HIGH_VEG, CROWN, CROWN_COLOUR, index, tree.ground))
        return Mesh.concat(parts)

    @cached_property
    def crown_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centres (k, 3), radii (k, 3), ground (k,)) of the crown ellipsoids, local frame."""
        if not self.trees:
            return np.zeros((0, 3)), np.ones((0, 3)), np.zeros(0)
        centres = np.array([[t.x, t.y, t.crown_z] for t in self.trees])
        radii = np.array([[t.radius, t.radius, t.crown_height] for t in self.trees])
        return centres, radii, np.array([t.ground for t in self.trees])

    # --- colours and reflectance at surface points ---------------------------------------------------------------

    def surface(self, points: np.ndarray, mesh: Mesh, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Albedo (n, 3) and lidar reflectance (n,) of the surface at local ``points`` on ``mesh`` triangles
        ``tri`` (materials, road markings, windows, leafy crowns)."""
        kind = mesh.kind[tri]
        colour = mesh.colour[tri].astype(np.float64)
        refl = KIND_REFLECTANCE[kind]
        terrain = kind == TERRAIN
        if terrain.any():
            material = self.terrain_material(points[terrain, 0], points[terrain, 1])
            colour[terrain] = TERRAIN_ALBEDO[material]
            refl[terrain] = TERRAIN_REFLECTANCE[material]
        window = self._window_mask(points, mesh, tri)
        colour[window] = WINDOW_ALBEDO
        refl[window] = WINDOW_REFLECTANCE
        crown = kind == CROWN
        if crown.any():
            colour[crown] *= (0.7 + 0.6 * hash_noise(points[crown], 2.5))[:, None]
        return colour, refl

    def surface_albedo(self, points: np.ndarray, mesh: Mesh, tri: np.ndarray) -> np.ndarray:
        """Albedo (n, 3) of the surface at local ``points`` on ``mesh`` triangles ``tri`` (see :meth:`surface`)."""
        return self.surface(points, mesh, tri)[0]

    def _window_mask(self, points: np.ndarray, mesh: Mesh, tri: np.ndarray) -> np.ndarray:
        """Windows: a regular grid on walls, 1.2 m x 1.4 m every 2.5 m, one row per 3 m storey."""
        wall = mesh.kind[tri] == WALL
        mask = np.zeros(len(tri), dtype=bool)
        if not wall.any():
            return mask
        p = points[wall]
        t = mesh.wall_tangent[tri[wall]].astype(np.float64)
        s = p[:, 0] * t[:, 0] + p[:, 1] * t[:, 1]
        h = p[:, 2] - mesh.base_z[tri[wall]]
        in_storey = np.mod(h, 3.0)
        mask[wall] = (h > 0.5) & (in_storey > 0.9) & (in_storey < 2.3) & (np.mod(s, 2.5) > 0.65) & (
            np.mod(s, 2.5) < 1.85) & (h < self._eave_local(mesh.obj[tri[wall]]) - 0.6)
        return mask

    def _eave_local(self, building_index: np.ndarray) -> np.ndarray:
        eaves = np.array([b.eave_height - b.ground_height for b in self.buildings] or [0.0])
        return eaves[building_index]


def hash_noise(points: np.ndarray, frequency: float) -> np.ndarray:
    """Deterministic value noise in [0, 1) from the integer cell of ``points * frequency`` (leafy texture)."""
    cell = np.floor(points * frequency).astype(np.int64)
    h = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (cell[:, 2] * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float64) / 65536.0
