"""Lay out the city block: street grid, raised terrace, building frontages, trees, hedges, cars and poles.

Buildings line both sides of the east-west streets: attached rows of 3-5 houses, detached houses (gable, hip,
half-hip, shed, flat; slightly rotated) and flat-roofed L- and U-shaped blocks, cycling so that even a small
block holds every roof type. North-south streets carry street trees; every street has parked cars along both
kerbs and street-light poles on the sidewalks. Randomness comes only from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import Polygon

from cim.synth import roofs
from cim.synth.config import SynthConfig
from cim.synth.scene import FLAT_ROOF_COLOUR, ROOF_COLOURS, WALL_COLOURS, Building, Car, Pole, Scene, Tree

_LOTS = ["row", "detached", "detached", "L", "detached", "detached", "U", "detached"]
_DETACHED_ROOFS = [roofs.GABLE, roofs.HIP, roofs.HALF_HIP, roofs.SHED, roofs.FLAT, roofs.HALF_HIP, roofs.HIP,
                   roofs.GABLE]
_ROW_ROOFS = [roofs.GABLE, roofs.GABLE, roofs.SHED, roofs.GABLE, roofs.FLAT]
_SETBACK = 3.0  # distance from the sidewalk to the building line (front yards)
_MAX_DEPTH = 20.0


def build_scene(config: SynthConfig) -> Scene:
    """The complete, deterministic scene for ``config``."""
    scene = Scene(config)
    rng = np.random.default_rng([config.seed, 1])
    segments = _segments(scene)
    _place_embankment(scene, segments)
    counters = {"lot": 0, "detached": 0, "row": 0}
    for street in scene.streets_y:
        for side in (-1.0, 1.0):
            depth = _available_depth(scene, street, side)
            if depth < 9.0:
                continue
            for xa, xb in segments:
                _fill_frontage(scene, rng, street, side, xa, xb, min(depth, _MAX_DEPTH), counters)
    _street_trees(scene, rng)
    _interior_trees(scene, rng, segments)
    _cars(scene, rng)
    _poles(scene)
    return scene


def _reach(scene: Scene) -> float:
    return scene.road_half + scene.config.sidewalk_width


def _segments(scene: Scene) -> list[tuple[float, float]]:
    """x-intervals of the frontages between north-south streets (and the block's edges)."""
    reach, e = _reach(scene), scene.config.extent
    bounds = [2.0]
    for s in scene.streets_x:
        bounds += [s - reach - 1.0, s + reach + 1.0]
    bounds.append(e - 2.0)
    return [(a, b) for a, b in zip(bounds[::2], bounds[1::2]) if b - a > 8.0]


def _neighbour(scene: Scene, street: float, side: float) -> float:
    """y of the next street (or block edge) on ``side`` of ``street``."""
    others = [s for s in scene.streets_y if (s - street) * side > 0]
    if others:
        return min(others, key=lambda s: abs(s - street))
    return 0.0 if side < 0 else scene.config.extent


def _available_depth(scene: Scene, street: float, side: float) -> float:
    reach = _reach(scene)
    other = _neighbour(scene, street, side)
    gap = abs(other - street)
    if other in (0.0, scene.config.extent):
        return gap - reach - _SETBACK - 2.0
    return gap / 2 - reach - _SETBACK - 2.0


def _place_embankment(scene: Scene, segments: list[tuple[float, float]]) -> None:
    """A raised terrace in the largest block interior (between the two frontages)."""
    c = scene.config
    if c.embankment_height <= 0 or not segments:
        return
    reach, run = _reach(scene), c.embankment_height * c.embankment_slope
    ys = [0.0, *scene.streets_y, c.extent]
    best: tuple[float, float, float, float] | None = None
    best_area = 0.0
    for lo, hi in zip(ys[:-1], ys[1:]):
        y0 = lo + (reach + _SETBACK + _MAX_DEPTH + 3.0 if lo > 0 else 2.0)
        y1 = hi - (reach + _SETBACK + _MAX_DEPTH + 3.0 if hi < c.extent else 2.0)
        for xa, xb in segments:
            x0, x1 = xa + 4.0, xb - 4.0
            plateau = (x0 + run, y0 + run, x1 - run, y1 - run)
            area = (plateau[2] - plateau[0]) * (plateau[3] - plateau[1])
            if plateau[2] - plateau[0] >= 5.0 and plateau[3] - plateau[1] >= 5.0 and area > best_area:
                best, best_area = plateau, area
    scene.embankment = best


def _fill_frontage(scene: Scene, rng: np.random.Generator, street: float, side: float, xa: float, xb: float,
                   depth: float, counters: dict[str, int]) -> None:
    front = street + side * (_reach(scene) + _SETBACK)
    cursor = xa
    while True:
        kind = _LOTS[counters["lot"] % len(_LOTS)]
        placed = None
        for attempt in (kind, "detached"):
            placed = _make_lot(scene, rng, attempt, cursor, xb, front, side, depth, counters)
            if placed is not None:
                break
        if placed is None:
            return
        counters["lot"] += 1
        cursor = placed + rng.uniform(3.0, 6.0)


def _make_lot(scene: Scene, rng: np.random.Generator, kind: str, x0: float, xmax: float, front: float,
              side: float, depth: float, counters: dict[str, int]) -> float | None:
    """Place one lot starting at ``x0``; return its east end, or None when it does not fit."""
    room = xmax - x0
    if kind == "row":
        units = int(rng.integers(3, 6))
        widths = rng.uniform(6.0, 8.0, units)
        while units >= 2 and widths[:units].sum() > room:
            units -= 1
        if units < 2:
            return None
        d = min(rng.uniform(10.0, 12.0), depth)
        x = x0
        for w in widths[:units]:
            roof = _ROW_ROOFS[counters["row"] % len(_ROW_ROOFS)]
            counters["row"] += 1
            eave = float(rng.choice([6.0, 6.5, 7.0, 9.0]))
            ridge = _ridge(rng, roof, eave, d)
            faces, sem = roofs.rectangle_solid(w, d, eave, ridge, roof)
            _add(scene, rng, faces, sem, roof, "row", 0.0, x + w / 2, front + side * d / 2, side, eave, ridge)
            x += w
        return x
    if kind == "detached":
        roof = _DETACHED_ROOFS[counters["detached"] % len(_DETACHED_ROOFS)]
        w = rng.uniform(8.0, 10.5)
        length = rng.uniform(max(10.0, w + 1.5), 14.0)
        d = min(w, depth)
        length = max(length, d + 1.5)
        angle = rng.uniform(-12.0, 12.0)
        extra = rng.uniform(0.0, 2.0)
        eave = float(rng.choice([3.2, 5.8, 6.2])) + rng.uniform(0.0, 0.5)
        ridge = _ridge(rng, roof, eave, d)
        faces, sem = roofs.rectangle_solid(length, d, eave, ridge, roof)
        half_x, half_y = _rotated_half_extent(length, d, angle)
        if 2 * half_x > room:
            return None
        counters["detached"] += 1
        cx = x0 + half_x
        cy = front + side * (half_y + extra)
        _add(scene, rng, faces, sem, roof, "detached", angle, cx, cy, side, eave, ridge)
        _hedge(scene, x0, x0 + 2 * half_x, front - side * 1.2)
        return x0 + 2 * half_x
    # L- and U-shaped flat-roofed blocks
    width = rng.uniform(18.0, 26.0) if kind == "L" else rng.uniform(22.0, 30.0)
    d = min(rng.uniform(14.0, 20.0), depth)
    if width > room or d < 10.0:
        return None
    if kind == "L":
        ring = [(0, 0), (width, 0), (width, 0.45 * d), (0.45 * width, 0.45 * d), (0.45 * width, d), (0, d)]
    else:
        a, c = 0.3 * width, 0.45 * d
        ring = [(0, 0), (width, 0), (width, d), (width - a, d), (width - a, c), (a, c), (a, d), (0, d)]
    poly = affinity.translate(Polygon(ring), -width / 2, -d / 2)
    if side < 0:  # the open side faces away from the street
        poly = affinity.scale(poly, 1.0, -1.0, origin=(0, 0))
    height = rng.uniform(7.0, 13.0)
    faces, sem = roofs.flat_solid(poly, height)
    _add(scene, rng, faces, sem, roofs.FLAT, kind, 0.0, x0 + width / 2, front + side * d / 2, side, height, height)
    return x0 + width


def _ridge(rng: np.random.Generator, roof: int, eave: float, depth: float) -> float:
    if roof == roofs.FLAT:
        return eave
    if roof == roofs.SHED:
        return eave + depth * np.tan(np.radians(rng.uniform(8.0, 15.0)))
    return eave + depth / 2 * np.tan(np.radians(rng.uniform(30.0, 45.0)))


def _rotated_half_extent(length: float, width: float, angle: float) -> tuple[float, float]:
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    return (length * c + width * s) / 2, (length * s + width * c) / 2


def _add(scene: Scene, rng: np.random.Generator, faces: list[np.ndarray], sem: list[str], roof: int, kind: str,
         angle: float, cx: float, cy: float, side: float, eave: float, ridge: float) -> None:
    # houses face the street: turn the local frame so its -y side (shed eave, first wall) looks at the street
    if side < 0:
        angle += 180.0
    local = roofs.place(faces, angle, cx, cy, 0.0)
    footprint_xy = local[0][:, :2][::-1]  # ground ring reversed = CCW footprint
    ground_local = float(np.min(scene.terrain_height_local(footprint_xy[:, 0], footprint_xy[:, 1])))
    ox, oy, oz = scene.origin
    ground = ground_local + oz
    world = [f + np.array([ox, oy, ground]) for f in local]
    footprint = Polygon(footprint_xy + [ox, oy])
    wall = WALL_COLOURS[int(rng.integers(len(WALL_COLOURS)))]
    roof_colour = FLAT_ROOF_COLOUR if roof == roofs.FLAT else ROOF_COLOURS[int(rng.integers(len(ROOF_COLOURS)))]
    scene.buildings.append(Building(
        id=f"B{len(scene.buildings) + 1:04d}", footprint=footprint, roof_type=roof, ground_height=ground,
        eave_height=ground + eave, ridge_height=ground + ridge, kind=kind, faces=world, semantics=list(sem),
        wall_colour=wall, roof_colour=roof_colour,
    ))


def _hedge(scene: Scene, x0: float, x1: float, y: float) -> None:
    """A clipped hedge of small ellipsoids along a front yard."""
    xs = np.arange(x0 + 0.5, x1 - 0.4, 0.8)
    ground = scene.terrain_height_local(xs, np.full(len(xs), y))
    for x, g in zip(xs, ground):
        scene.trees.append(Tree(float(x), float(y), float(g), float(g) + 0.6, 0.55, 0.6, 0.0))


def _add_tree(scene: Scene, rng: np.random.Generator, x: float, y: float) -> None:
    g = float(scene.terrain_height_local(np.array([x]), np.array([y]))[0])
    radius = rng.uniform(2.0, 3.5)
    half = rng.uniform(2.5, 4.0)
    trunk = rng.uniform(2.5, 3.5)
    scene.trees.append(Tree(x, y, g, g + trunk + half, radius, half, rng.uniform(0.15, 0.25)))


def _street_trees(scene: Scene, rng: np.random.Generator) -> None:
    c, reach = scene.config, _reach(scene)
    for s in scene.streets_x:
        for side in (-1.0, 1.0):
            x = s + side * (scene.road_half + c.sidewalk_width / 2)
            for y in np.arange(6.0, c.extent - 6.0, c.tree_spacing):
                if any(abs(y - t) < reach + 4.0 for t in scene.streets_y):
                    continue
                _add_tree(scene, rng, float(x), float(y + rng.uniform(-1.0, 1.0)))


def _interior_trees(scene: Scene, rng: np.random.Generator, segments: list[tuple[float, float]]) -> None:
    """Trees in backyards and on the terrace, clear of buildings, streets and each other."""
    c = scene.config
    reach = _reach(scene)
    blocked = [b.footprint.buffer(4.5) for b in scene.buildings]
    ox, oy = scene.origin[0], scene.origin[1]
    n = int(c.extent * c.extent / 900.0)
    cand = rng.uniform(5.0, c.extent - 5.0, (n, 2))
    placed: list[tuple[float, float]] = []
    for x, y in cand:  # a few dozen candidates: not a hot path
        if any(abs(y - s) < reach + 5.0 for s in scene.streets_y) or any(abs(x - s) < reach + 5.0
                                                                         for s in scene.streets_x):
            continue
        if any(shapely.contains_xy(poly, x + ox, y + oy) for poly in blocked):
            continue
        if any((x - px) ** 2 + (y - py) ** 2 < 64.0 for px, py in placed):
            continue
        placed.append((x, y))
        _add_tree(scene, rng, float(x), float(y))


def _cars(scene: Scene, rng: np.random.Generator) -> None:
    c, reach = scene.config, _reach(scene)
    lane = scene.road_half - 1.1
    for axis, streets, crossing in (("x", scene.streets_y, scene.streets_x), ("y", scene.streets_x, scene.streets_y)):
        for s in streets:
            for side in (-1.0, 1.0):
                pos = rng.uniform(3.0, 8.0)
                while pos < c.extent - 4.0:
                    if not any(abs(pos - t) < reach + 6.0 for t in crossing):
                        x, y = (pos, s + side * lane) if axis == "x" else (s + side * lane, pos)
                        g = float(scene.terrain_height_local(np.array([x]), np.array([y]))[0])
                        angle = (0.0 if side > 0 else 180.0) if axis == "x" else (90.0 if side < 0 else 270.0)
                        scene.cars.append(Car(float(x), float(y), g, angle, int(rng.integers(7))))
                    pos += 4.4 + rng.exponential(max(c.car_spacing - 4.4, 0.5))


def _poles(scene: Scene) -> None:
    c, reach = scene.config, _reach(scene)
    offset = scene.road_half + 0.5
    for axis, streets, crossing in (("x", scene.streets_y, scene.streets_x), ("y", scene.streets_x, scene.streets_y)):
        for s in streets:
            for side, start in ((-1.0, 5.0), (1.0, 5.0 + c.pole_spacing / 2)):
                for pos in np.arange(start, c.extent - 3.0, c.pole_spacing):
                    if any(abs(pos - t) < reach + 2.0 for t in crossing):
                        continue
                    x, y = (pos, s + side * offset) if axis == "x" else (s + side * offset, pos)
                    if axis == "y" and any(abs(y - t.y) < 2.0 and abs(x - t.x) < 1.0 for t in scene.trees):
                        continue
                    g = float(scene.terrain_height_local(np.array([x]), np.array([y]))[0])
                    scene.poles.append(Pole(float(x), float(y), g, 7.0, 0.09))
