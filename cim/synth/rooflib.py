"""A library of German roofs with exact truth: rectangular gable, hip, half-hip, mansard, pyramid, shed and flat
(with parapets) roofs, L/T/U plans of crossing gables and of hip roofs, dormers, chimneys, terraced rows sharing
walls and flat annexes, and the rarer AdV types (cone and dome on round footprints, sawtooth and barrel halls, tower
spires), laid out one group per square of a grid (deterministic for a seed). ``HOUSE_GROUPS`` holds houses as
reality has them: gable, hip, half-hip and mansard main roofs with dormers, chimneys, a lower annex and a porch.

Each building carries its footprint, its AdV roof type (``AX_Dachform`` code of the main roof: dormers and
chimneys do not change it; crossing gables of an L/T/U plan are a gable roof, crossing hip roofs a hip roof),
the truth solids whose upper envelope is its LoD2 roof (main bodies and dormers) and the extras that are scanned
but not part of an LoD2 model (chimneys, parapets). Scan the library with :func:`cim.synth.scanstyles.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import Polygon

from cim.buildings.rooftype import BARREL, CONE, DOME, SAWTOOTH, TOWER
from cim.cityjson import BuildingGeometry
from cim.synth.roofs import (FLAT, GABLE, HALF_HIP, HIP, MANSARD, PYRAMID, ROOF_TYPES, SHED, flat_solid,
                             newell_vector, place, rectangle_solid, roof_solid)

GROUND_Z = 100.0
GROUND_SLOPE = (0.01, -0.005)  # the terrain: z = GROUND_Z + sx·(x - x0) + sy·(y - y0)
ORIGIN = (500_000.0, 5_480_000.0)


@dataclass
class LibraryBuilding:
    """One building of the library (world coordinates)."""

    id: str
    footprint: Polygon
    roof_type: int
    ground: float
    solids: list[BuildingGeometry]  # the LoD2 truth: its roof is the upper envelope of these solids
    extras: list[BuildingGeometry] = field(default_factory=list)  # scanned, not modelled (chimneys, parapets)
    kind: str = ""  # what the generator built ("gable", "gable+dormer", "L-plan", "row", ...)
    n_planes: int = 0  # roof planes of the truth LoD2 roof

    @property
    def parts(self) -> list[BuildingGeometry]:
        return self.solids + self.extras


def ground_z(x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
    """Terrain height of the library at (x, y)."""
    return GROUND_Z + GROUND_SLOPE[0] * (np.asarray(x) - ORIGIN[0]) + GROUND_SLOPE[1] * (np.asarray(y) - ORIGIN[1])


def _pitch_ridge(rng: np.random.Generator, width: float, eave: float, lo: float, hi: float) -> float:
    return eave + np.tan(np.radians(rng.uniform(lo, hi))) * width / 2.0


@dataclass
class _Placer:
    """Places local-frame solids (ground at z = 0) at a slot: rotation ``angle`` about (x, y), ground ``z``."""

    x: float
    y: float
    angle: float

    def solid(self, bid: str, faces: list[np.ndarray], sem: list[str], dx: float = 0.0, dy: float = 0.0,
              dz: float = 0.0, turn: float = 0.0) -> BuildingGeometry:
        local = place(faces, turn, dx, dy, dz)
        return BuildingGeometry(bid, place(local, self.angle, self.x, self.y, self.z), sem)

    @property
    def z(self) -> float:
        return float(ground_z(self.x, self.y))


def _outline(solids: list[BuildingGeometry]) -> Polygon:
    polys = [Polygon(f[:, :2]) for s in solids for f, t in zip(s.faces, s.semantics) if t == "GroundSurface"]
    return shapely.set_precision(shapely.union_all(polys), 0.001).normalize()


def _rect_building(rng: np.random.Generator, bid: str, at: _Placer, roof_type: int) -> LibraryBuilding:
    """One rectangular building of ``roof_type`` with random size, eave height and pitch."""
    width = float(rng.uniform(7.0, 11.0))
    length = width if roof_type == PYRAMID else float(width + rng.uniform(3.0, 9.0))
    eave = float(rng.uniform(3.0, 7.0))
    pitch = {FLAT: (0, 0), SHED: (8, 15), GABLE: (30, 50), HIP: (25, 40), HALF_HIP: (35, 50), MANSARD: (45, 55),
             PYRAMID: (30, 40)}[roof_type]
    ridge = _pitch_ridge(rng, width, eave, *pitch) if roof_type != FLAT else eave
    if roof_type == SHED:
        ridge = eave + np.tan(np.radians(rng.uniform(*pitch))) * width
    faces, sem = rectangle_solid(length, width, eave, ridge, roof_type)
    main = at.solid(bid, faces, sem)
    planes = {FLAT: 1, SHED: 1, GABLE: 2, HIP: 4, HALF_HIP: 4, MANSARD: 4, PYRAMID: 4}[roof_type]
    return LibraryBuilding(bid, _outline([main]), roof_type, at.z, [main], [], ROOF_TYPES[roof_type], planes)


def _box(length: float, width: float, height: float) -> tuple[list[np.ndarray], list[str]]:
    return flat_solid(shapely.box(-length / 2, -width / 2, length / 2, width / 2), height)


def _with_dormer(rng: np.random.Generator, bid: str, at: _Placer) -> LibraryBuilding:
    """A gable house with a flat-roofed dormer on its south slope (part of the LoD2 truth)."""
    b = _gable_block(rng, bid, at, length=float(rng.uniform(13, 18)), width=float(rng.uniform(9, 11)))
    main, (length, width, eave, ridge) = b
    dw, dd = float(rng.uniform(2.0, 3.5)), 2.0
    y_back = -width / 2 + 1.0 + dd  # the dormer's back edge on the slope
    top = ridge - (ridge - eave) * abs(y_back) / (width / 2) - 0.05
    faces, sem = _box(dw, dd, top)
    dormer = at.solid(bid, faces, sem, dx=float(rng.uniform(-length / 4, length / 4)), dy=y_back - dd / 2)
    return LibraryBuilding(bid, _outline([main]), GABLE, at.z, [main, dormer], [], "gable+dormer", 3)


def _with_chimney(rng: np.random.Generator, bid: str, at: _Placer, roof_type: int) -> LibraryBuilding:
    """A gable or hip house with a chimney (0.6–0.9 m square, 1 m above the ridge): scanned, not in the truth."""
    b = _rect_building(rng, bid, at, roof_type)
    main = b.solids[0]
    zr = max(float(f[:, 2].max()) for f in main.faces) - at.z
    s = float(rng.uniform(0.6, 0.9))
    faces, sem = _box(s, s, zr + 1.0)
    chimney = at.solid(bid, faces, sem, dx=float(rng.uniform(-2, 2)), dy=0.8)
    b.extras.append(chimney)
    b.kind += "+chimney"
    return b


def _gable_block(rng: np.random.Generator, bid: str, at: _Placer, *, length: float, width: float,
                 dx: float = 0.0, dy: float = 0.0, turn: float = 0.0, eave: float | None = None,
                 ridge: float | None = None) -> tuple[BuildingGeometry, tuple[float, float, float, float]]:
    eave = float(rng.uniform(3.5, 6.5)) if eave is None else eave
    ridge = float(_pitch_ridge(rng, width, eave, 35, 48)) if ridge is None else ridge
    faces, sem = rectangle_solid(length, width, eave, ridge, GABLE)
    return at.solid(bid, faces, sem, dx=dx, dy=dy, turn=turn), (length, width, eave, ridge)


def _plan(rng: np.random.Generator, bid: str, at: _Placer, shape: str, roof_type: int = GABLE) -> LibraryBuilding:
    """L, T or U plan of crossing gable or hip roofs of equal eave and ridge height (valleys where wings meet).
    A gable wing starts at the main roof's ridge (its gable wall hidden under the main roof); a hip wing runs
    across the main roof to its far eave, where its hip end lies in the main roof's far plane, so that the upper
    envelope is the hip roof of the plan: hips at the outer corners and wing ends, valleys at the inner corners,
    one plane per outline edge line (AdV 3200 for the whole: a hip roof over an L, T or U plan)."""
    width = float(rng.uniform(8.0, 10.0))
    eave = float(rng.uniform(3.5, 6.0))
    ridge = float(_pitch_ridge(rng, width, eave, 35, 45) if roof_type == GABLE
                  else _pitch_ridge(rng, width, eave, 25, 40))
    length = float(rng.uniform(16.0, 20.0))
    wing = float(rng.uniform(8.0, 11.0))
    inside = width / 2 if roof_type == GABLE else width  # how far a wing reaches into the main block
    solids = [at.solid(bid, *rectangle_solid(length, width, eave, ridge, roof_type))]
    ends = {"L": [length / 2 - width / 2], "T": [0.0], "U": [length / 2 - width / 2, -(length / 2 - width / 2)]}
    for x in ends[shape]:
        faces, sem = rectangle_solid(wing + inside, width, eave, ridge, roof_type)
        solids.append(at.solid(bid, faces, sem, dx=x, dy=width / 2 + wing - (wing + inside) / 2, turn=90.0))
    outline = _outline(solids)
    kind = f"{shape}-plan" if roof_type == GABLE else f"hip-{shape}-plan"
    planes = 2 * len(solids) if roof_type == GABLE else _edge_lines(outline)
    return LibraryBuilding(bid, outline, roof_type, at.z, solids, [], kind, planes)


def _edge_lines(outline: Polygon) -> int:
    """The number of distinct lines the edges of an outline lie on (a hip roof of one pitch has a plane each)."""
    ring = np.asarray(outline.exterior.coords) - outline.centroid.coords[0]
    lines = set()
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]):
        angle = np.arctan2(y1 - y0, x1 - x0) % np.pi
        lines.add((round(float(angle), 2), round(float(x0 * np.sin(angle) - y0 * np.cos(angle)), 1)))
    return len(lines)


def _parapet_flat(rng: np.random.Generator, bid: str, at: _Placer) -> LibraryBuilding:
    """A flat roof with a 0.25 m parapet 0.5–0.9 m high along its edge (the parapet is an extra)."""
    length, width = float(rng.uniform(14, 24)), float(rng.uniform(10, 16))
    h = float(rng.uniform(6.0, 12.0))
    faces, sem = _box(length, width, h)
    main = at.solid(bid, faces, sem)
    t, ph = 0.25, h + float(rng.uniform(0.5, 0.9))
    extras = []
    for dx, dy, lx, ly in ((0, width / 2 - t / 2, length, t), (0, -width / 2 + t / 2, length, t),
                           (length / 2 - t / 2, 0, t, width), (-length / 2 + t / 2, 0, t, width)):
        f, s = _box(lx, ly, ph)
        extras.append(at.solid(bid, f, s, dx=dx, dy=dy))
    return LibraryBuilding(bid, _outline([main]), FLAT, at.z, [main], extras, "flat+parapet", 1)


def _row(rng: np.random.Generator, bid: str, at: _Placer, houses: int = 4) -> list[LibraryBuilding]:
    """A terraced row: houses sharing walls, ridges along the row, eaves and ridges stepping by up to 0.8 m."""
    width = float(rng.uniform(9.0, 11.0))
    out = []
    x = -houses * 3.5
    for i in range(houses):
        length = float(rng.uniform(6.0, 8.0))
        eave = float(rng.uniform(5.0, 5.8))
        ridge = eave + float(np.tan(np.radians(rng.uniform(38, 46)))) * width / 2
        main, _ = _gable_block(rng, f"{bid}-{i}", at, length=length, width=width, eave=eave, ridge=ridge,
                               dx=x + length / 2)
        x += length
        out.append(LibraryBuilding(f"{bid}-{i}", _outline([main]), GABLE, at.z, [main], [], "row", 2))
    return out


def _annexed(rng: np.random.Generator, bid: str, at: _Placer) -> list[LibraryBuilding]:
    """A hip-roofed house and a flat-roofed garage annex (its own building) against its long side."""
    house = _rect_building(rng, bid, at, HIP)
    # the house's local frame is lost after placing: rebuild the garage against the south wall in world terms
    ring = np.asarray(house.footprint.exterior.coords)[:-1]
    ang = np.radians(at.angle)
    ax, ay = np.cos(ang), np.sin(ang)
    v = (ring - [at.x, at.y]) @ np.array([[ax, -ay], [ay, ax]])  # local (u, v)
    south = float(v[:, 1].min())
    faces, sem = _box(6.0, 3.5, float(rng.uniform(2.6, 3.2)))
    garage = at.solid(f"{bid}-annex", faces, sem, dx=float(v[:, 0].max()) - 3.5, dy=south - 1.75)
    annex = LibraryBuilding(f"{bid}-annex", _outline([garage]), FLAT, at.z, [garage], [], "annex", 1)
    return [house, annex]


def _height_at(faces: list[np.ndarray], sem: list[str], x: float, y: float) -> float:
    """Height of the highest roof face of a local-frame solid above (x, y) (-inf outside its roof)."""
    z = -np.inf
    for f, t in zip(faces, sem):
        if t == "RoofSurface" and Polygon(f[:, :2]).buffer(1e-6).contains(shapely.Point(x, y)):
            n = newell_vector(f)
            z = max(z, float(f[0, 2] - (n[0] * (x - f[0, 0]) + n[1] * (y - f[0, 1])) / n[2]))
    return z


def _dormer(rng: np.random.Generator, main: tuple[list[np.ndarray], list[str]], x: float, side: int,
            half_width: float, gable: bool) -> tuple[list[np.ndarray], list[str], float, float, float] | None:
    """A gable or shed dormer at ``x`` on the ``side`` (-1: -y, +1: +y) slope of a local-frame main solid:
    (faces, semantics, dx, dy, turn) of its solid (from the ground up), its front 0.5–1.2 m back from the eave
    and 1.0–1.4 m above the main roof, its back reaching into the main roof; None where it does not fit."""
    dw = float(rng.uniform(1.6, 2.8))
    y_f = side * (half_width - float(rng.uniform(0.5, 1.2)))
    z_f = max(_height_at(*main, x + u, y_f) for u in (-dw / 2, dw / 2))
    eave = z_f + float(rng.uniform(1.0, 1.4))
    rise = np.tan(np.radians(rng.uniform(35, 45) if gable else rng.uniform(8, 15)))
    for depth in np.arange(0.5, half_width, 0.1):  # the depth at which the dormer's top is inside the main roof
        y = y_f - side * depth
        top = eave + rise * dw / 2 if gable else eave + rise * depth
        if min(_height_at(*main, x + u, y) for u in (-dw / 2, dw / 2)) >= top + 0.1:
            break
    else:
        return None
    depth += 0.2
    if abs(y_f - side * depth) < 0.3:  # not across the ridge
        return None
    dy = y_f - side * depth / 2
    if gable:  # ridge across the main ridge
        return (*rectangle_solid(depth, dw, eave, eave + rise * dw / 2, GABLE), x, dy, 90.0)
    return (*rectangle_solid(dw, depth, eave, eave + rise * depth, SHED), x, dy, 0.0 if side < 0 else 180.0)


def _house(rng: np.random.Generator, bid: str, at: _Placer, roof_type: int) -> LibraryBuilding:
    """A gable, hip, half-hip or mansard house as reality has them: 1–4 gable or shed dormers on its long slopes,
    often a chimney (an extra), a lower flat or shed annex at one end or side, a porch. Its AdV type is the main
    roof's: superstructures and annexes do not change it."""
    width = float(rng.uniform(8.5, 11.0))
    length = float(width + rng.uniform(4.0, 9.0))
    eave = float(rng.uniform(4.0, 6.5))
    pitch = {GABLE: (35, 50), HIP: (30, 42), HALF_HIP: (38, 50), MANSARD: (40, 48)}[roof_type]  # lower < 70°
    ridge = _pitch_ridge(rng, width, eave, *pitch)
    main_local = rectangle_solid(length, width, eave, ridge, roof_type)
    solids = [at.solid(bid, *main_local)]
    planes = {GABLE: 2, HIP: 4, HALF_HIP: 4, MANSARD: 4}[roof_type]
    # dormers where the long slopes run the full depth: clear of hip ends
    reach = length / 2 - (width / 2 if roof_type == HIP else 0.4 * width / 2 if roof_type == HALF_HIP else 0.0)
    n_dormers = int(rng.integers(1, 5))
    sides = rng.choice([-1, 1], n_dormers) if n_dormers > 1 else np.array([-1])
    gable = bool(rng.uniform() < 0.5)  # one dormer kind per house
    for side in (-1, 1):
        n = int((sides == side).sum())
        xs = np.linspace(-reach + 2.0, reach - 2.0, n + 2)[1:-1] if n else []
        for x in xs:
            d = _dormer(rng, main_local, float(x), side, width / 2, gable)
            if d is not None:
                solids.append(at.solid(bid, d[0], d[1], dx=d[2], dy=d[3], turn=d[4]))
                planes += 2 if gable else 1
    extras = []
    if rng.uniform() < 0.6:  # a chimney 1 m above the ridge
        c = float(rng.uniform(0.6, 0.9))
        extras.append(at.solid(bid, *_box(c, c, ridge + 1.0), dx=float(rng.uniform(-reach, reach) / 2), dy=0.8))
    if rng.uniform() < 0.7:  # a lower annex: flat or shed, at one end or along the back
        h = float(rng.uniform(2.6, min(3.3, eave - 0.8)))
        depth, span = float(rng.uniform(3.0, 4.5)), float(rng.uniform(3.5, 6.0))
        # a shed's low side (local -y) turned away from the house
        f = rectangle_solid(span, depth, h - 0.6, h, SHED) if rng.uniform() < 0.4 else _box(span, depth, h)
        if rng.uniform() < 0.5:  # at the +x end
            solids.append(at.solid(bid, *f, dx=length / 2 + depth / 2 - 0.01, turn=90.0))
        else:  # along the +y side
            solids.append(at.solid(bid, *f, dx=float(rng.uniform(-1, 1)), dy=width / 2 + depth / 2 - 0.01, turn=180.0))
        planes += 1
    if rng.uniform() < 0.4:  # a porch roof over the front door
        solids.append(at.solid(bid, *_box(float(rng.uniform(1.8, 2.6)), 1.6, float(rng.uniform(2.4, 2.9))),
                               dx=float(rng.uniform(-1, 1)), dy=-width / 2 - 0.8 + 0.01))
        planes += 1
    return LibraryBuilding(bid, _outline(solids), roof_type, at.z, solids, extras, f"{ROOF_TYPES[roof_type]}-house",
                           planes)


def _circle(radius: float, sides: int) -> np.ndarray:
    """A regular ``sides``-gon (CCW ring, first vertex on +x) inscribed in a circle of ``radius``."""
    t = np.linspace(0.0, 2 * np.pi, sides, endpoint=False)
    return np.column_stack([radius * np.cos(t), radius * np.sin(t)])


def _cone(rng: np.random.Generator, bid: str, at: _Placer) -> LibraryBuilding:
    """A cone roof (AdV 3600, 30–45°) on a round footprint (a 32-gon of radius 4–7 m): one triangle per side."""
    radius, eave = float(rng.uniform(4.0, 7.0)), float(rng.uniform(3.0, 7.0))
    ring = _circle(radius, 32)
    apex = [0.0, 0.0, eave + radius * np.tan(np.radians(rng.uniform(30, 45)))]
    roofs = [np.array([[*ring[i], eave], [*ring[(i + 1) % 32], eave], apex]) for i in range(32)]
    main = at.solid(bid, *roof_solid(ring, roofs))
    return LibraryBuilding(bid, _outline([main]), CONE, at.z, [main], [], "cone", len(roofs))


def _dome(rng: np.random.Generator, bid: str, at: _Placer, rings: int = 8) -> LibraryBuilding:
    """A dome roof (AdV 3700): a spherical cap rising 0.5–1 times its radius over a round footprint (a 32-gon of
    radius 5–8 m), as ``rings`` rings of planar trapezoids (symmetric, hence planar) and a fan at the top."""
    radius, eave = float(rng.uniform(5.0, 8.0)), float(rng.uniform(3.0, 7.0))
    rise = radius * float(rng.uniform(0.5, 1.0))
    sphere = (radius**2 + rise**2) / (2 * rise)  # radius of the sphere, centre at eave + rise - sphere
    polar = np.linspace(np.arcsin(radius / sphere), 0.0, rings + 1)  # from the eave ring up to the top
    ring = _circle(1.0, 32)
    r, z = sphere * np.sin(polar), eave + rise - sphere + sphere * np.cos(polar)
    roofs = []
    for k in range(rings):
        lo = np.column_stack([ring * r[k], np.full(32, z[k])])
        hi = np.column_stack([ring * r[k + 1], np.full(32, z[k + 1])])
        for i in range(32):
            j = (i + 1) % 32
            roofs.append(np.array([lo[i], lo[j], hi[j], hi[i]]) if k < rings - 1 else np.array([lo[i], lo[j], hi[i]]))
    main = at.solid(bid, *roof_solid(ring * radius, roofs))
    return LibraryBuilding(bid, _outline([main]), DOME, at.z, [main], [], "dome", len(roofs))


def _barrel(rng: np.random.Generator, bid: str, at: _Placer, strips: int = 16) -> LibraryBuilding:
    """A barrel (arched) roof (AdV 3900) over a rectangular hall: a circular arc across the width rising 0.2–0.35
    times the width, as ``strips`` planar strips along the length."""
    length, width = float(rng.uniform(14.0, 24.0)), float(rng.uniform(8.0, 14.0))
    eave, rise = float(rng.uniform(4.0, 8.0)), width * float(rng.uniform(0.2, 0.35))
    circle = ((width / 2) ** 2 + rise**2) / (2 * rise)
    v = np.linspace(-width / 2, width / 2, strips + 1)
    z = eave + rise - circle + np.sqrt(circle**2 - v**2)
    a = length / 2
    roofs = [np.array([[-a, v[i], z[i]], [a, v[i], z[i]], [a, v[i + 1], z[i + 1]], [-a, v[i + 1], z[i + 1]]])
             for i in range(strips)]
    ring = np.array([[-a, -width / 2], [a, -width / 2], [a, width / 2], [-a, width / 2]])
    main = at.solid(bid, *roof_solid(ring, roofs))
    return LibraryBuilding(bid, _outline([main]), BARREL, at.z, [main], [], "barrel", strips)


def _sawtooth(rng: np.random.Generator, bid: str, at: _Placer) -> LibraryBuilding:
    """A sawtooth (shed) hall roof (AdV 3800): 3–5 equal shed roofs side by side, each rising 1.5–2.5 m to a
    vertical glazed face over the low eave of the next."""
    teeth, depth, length = int(rng.integers(3, 6)), float(rng.uniform(4.0, 6.0)), float(rng.uniform(14.0, 24.0))
    eave = float(rng.uniform(5.0, 7.0))
    ridge = eave + float(rng.uniform(1.5, 2.5))
    solids = [at.solid(bid, *rectangle_solid(length, depth, eave, ridge, SHED), dy=(i - (teeth - 1) / 2) * depth)
              for i in range(teeth)]
    return LibraryBuilding(bid, _outline(solids), SAWTOOTH, at.z, solids, [], "sawtooth", teeth)


def _tower(rng: np.random.Generator, bid: str, at: _Placer) -> LibraryBuilding:
    """A tower roof (AdV 4000, Turmdach: a spire): a pyramid of 61–69° on a square of 6.5–10 m, eaves 10–18 m
    (cim takes planes steeper than 70° for walls)."""
    side, eave = float(rng.uniform(6.5, 10.0)), float(rng.uniform(10.0, 18.0))
    ridge = eave + np.tan(np.radians(rng.uniform(61, 69))) * side / 2
    main = at.solid(bid, *rectangle_solid(side, side, eave, ridge, PYRAMID))
    return LibraryBuilding(bid, _outline([main]), TOWER, at.z, [main], [], "tower", 4)


# the library: (kind, count) per group; a group fills one grid square
GROUPS = [("flat", 6), ("shed", 6), ("gable", 8), ("hip", 8), ("half-hip", 6), ("mansard", 6), ("pyramid", 4),
           ("flat+parapet", 4), ("gable+dormer", 5), ("gable+chimney", 4), ("hip+chimney", 3), ("L-plan", 3),
           ("T-plan", 2), ("U-plan", 2), ("row", 2), ("annex", 3)]
# hip roofs over L, T and U plans (AdV 3200; kept apart so that the default library and its measures stay as they
# were: their roofs are the hardest for the planes, ALS RMSE p90 of ``roof_library(3, scale=0.35)`` 0.084 m with them)
HIP_PLAN_GROUPS = [("hip-L-plan", 3), ("hip-T-plan", 2), ("hip-U-plan", 2)]
# the rarer AdV roof types: cone 3600, dome 3700, sawtooth 3800, barrel 3900, tower 4000
SPECIAL_GROUPS = [("cone", 3), ("dome", 3), ("sawtooth", 3), ("barrel", 3), ("tower", 3)]
# main roofs as reality has them: dormers, chimneys, a lower annex, a porch (the type is the main roof's)
HOUSE_GROUPS = [("gable-house", 3), ("hip-house", 3), ("half-hip-house", 2), ("mansard-house", 2)]
_SPECIAL = {"cone": _cone, "dome": _dome, "sawtooth": _sawtooth, "barrel": _barrel, "tower": _tower}


def roof_library(seed: int = 0, *, scale: float = 1.0, spacing: float = 45.0,
                 groups: list[tuple[str, int]] | None = None) -> list[LibraryBuilding]:
    """The library: every group of ``groups`` (default :data:`GROUPS`; :data:`SPECIAL_GROUPS` holds cone, dome,
    sawtooth, barrel and tower roofs, :data:`HIP_PLAN_GROUPS` hip-roofed L, T and U plans) with counts times
    ``scale`` (at least one each), one per square of a ``spacing`` grid, each rotated at random; deterministic
    for ``seed``."""
    rng = np.random.default_rng(seed)
    kinds = [k for k, n in (GROUPS if groups is None else groups) for _ in range(max(1, int(round(n * scale))))]
    side = int(np.ceil(np.sqrt(len(kinds))))
    out: list[LibraryBuilding] = []
    by_name = {v: k for k, v in ROOF_TYPES.items()}
    for i, kind in enumerate(kinds):
        at = _Placer(ORIGIN[0] + (i % side) * spacing, ORIGIN[1] + (i // side) * spacing, float(rng.uniform(0, 180)))
        bid = f"b{i:03d}"
        if kind in by_name:
            out.append(_rect_building(rng, bid, at, by_name[kind]))
        elif kind == "flat+parapet":
            out.append(_parapet_flat(rng, bid, at))
        elif kind == "gable+dormer":
            out.append(_with_dormer(rng, bid, at))
        elif kind.endswith("+chimney"):
            out.append(_with_chimney(rng, bid, at, by_name[kind.split("+")[0]]))
        elif kind.endswith("-plan"):
            out.append(_plan(rng, bid, at, kind[-6], HIP if kind.startswith("hip-") else GABLE))
        elif kind.endswith("-house"):
            out.append(_house(rng, bid, at, by_name[kind[:-6]]))
        elif kind in _SPECIAL:
            out.append(_SPECIAL[kind](rng, bid, at))
        elif kind == "row":
            out.extend(_row(rng, bid, at))
        else:
            out.extend(_annexed(rng, bid, at))
    return out


def buildings_from_solids(solids: list[BuildingGeometry]) -> list[LibraryBuilding]:
    """Library buildings from existing LoD2 solids (e.g. 3DBAG's), to be scanned like the library; their roof
    type is unknown (0) and their plane count is that of their roof (:func:`cim.buildings.evaluate.roof_planes`)."""
    from cim.buildings.evaluate import footprint_of, roof_planes

    out = []
    for s in solids:
        fp = footprint_of(s)
        if not isinstance(fp, Polygon) or fp.area <= 0:
            continue
        ground = min(float(f[:, 2].min()) for f in s.faces)
        out.append(LibraryBuilding(s.id, fp, 0, ground, [s], [], "solid", len(roof_planes(s))))
    return out
