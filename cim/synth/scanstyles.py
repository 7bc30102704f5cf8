"""Two point-cloud styles of the same buildings, with fixed parameters (see docs/buildings.md):

* ``ALS``: airborne laser scanning, 10 points/m² at random positions, Gaussian height noise σ 3 cm, walls seen
  sparsely (1 point/m², second of two returns), every roof point class 6, ground class 2.
* ``IMAGE_MATCHING``: a dense-matching DSM, one point per 0.2 m raster cell (25 points/m²), σ 0.15 m, the surface
  averaged over a disk of 0.5 m radius (ridges, eaves and steps rounded), +0.3 m systematic offset of every
  building's points, no walls, 20 % of the roof points labelled 1 (unclassified) or 2 (ground) instead of 6.

Both scan every building (truth solids and extras such as chimneys) and the terrain in a 5 m ring around each
group of buildings. Deterministic for a seed; numpy throughout (no loop over points).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyproj
import shapely

from cim.buildings.evaluate import roof_height_at
from cim.cityjson import BuildingGeometry
from cim.points import PointCloud
from cim.synth.rooflib import ground_z
from cim.synth.roofs import newell_vector

CRS = "EPSG:25832"


@dataclass(frozen=True)
class ScanStyle:
    """Fixed parameters of a simulated point cloud."""

    name: str
    density: float  # points per m² in plan
    sigma: float  # Gaussian height noise (m)
    grid: bool  # points on a raster (DSM) instead of at random positions
    round_radius: float  # the surface is averaged over a disk of this radius (m); 0: sharp
    offset: float  # systematic height offset of each building's points (m)
    wall_density: float  # points per m² of wall (0: none)
    mislabel: float  # share of roof points labelled 1 or 2 instead of 6
    ring: float = 5.0  # terrain scanned this far around each group of buildings (m)


ALS = ScanStyle("als", 10.0, 0.03, False, 0.0, 0.0, 1.0, 0.0)
IMAGE_MATCHING = ScanStyle("image-matching", 25.0, 0.15, True, 0.5, 0.3, 0.0, 0.2)
STYLES = {s.name: s for s in (ALS, IMAGE_MATCHING)}


def _disk(radius: float) -> np.ndarray:
    """Offsets (k, 2) of a hexagonal pattern filling a disk of ``radius`` (the centre included)."""
    if radius <= 0:
        return np.zeros((1, 2))
    step = radius / 2.0
    i, j = np.meshgrid(np.arange(-3, 4), np.arange(-3, 4))
    xy = np.column_stack([(i + 0.5 * (j % 2)).ravel() * step, (j * np.sqrt(3) / 2).ravel() * step])
    return xy[np.hypot(xy[:, 0], xy[:, 1]) <= radius + 1e-9]


def surface(parts: Sequence[BuildingGeometry], ground: Callable[[np.ndarray, np.ndarray], np.ndarray],
            x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The true surface (highest roof of ``parts``, else the terrain) at (x, y)."""
    z = ground(x, y)
    for part in parts:
        z = np.fmax(z, roof_height_at(part, x, y))
    return z


def _positions(area: shapely.Polygon, style: ScanStyle, rng: np.random.Generator) -> np.ndarray:
    minx, miny, maxx, maxy = area.bounds
    if style.grid:
        step = 1.0 / np.sqrt(style.density)
        gx, gy = np.meshgrid(np.arange(np.floor(minx / step), np.ceil(maxx / step)) * step + step / 2,
                             np.arange(np.floor(miny / step), np.ceil(maxy / step)) * step + step / 2)
        xy = np.column_stack([gx.ravel(), gy.ravel()])
    else:
        n = rng.poisson(style.density * (maxx - minx) * (maxy - miny))
        xy = np.column_stack([rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)])
    return xy[shapely.contains_xy(area, xy[:, 0], xy[:, 1])]


def _wall_points(parts: Sequence[BuildingGeometry], top: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 density: float, rng: np.random.Generator) -> np.ndarray:
    """Points on the outside walls of ``parts`` (a point whose outside is under a roof is dropped)."""
    out = []
    for part in parts:
        for f, s in zip(part.faces, part.semantics):
            if s != "WallSurface":
                continue
            nv = newell_vector(f)
            area = np.linalg.norm(nv) / 2
            n = rng.poisson(density * area)
            if n == 0:
                continue
            # random points in the face's fan triangles, weighted by area
            v0, a, b = f[0], f[1:-1] - f[0], f[2:] - f[0]
            w = np.linalg.norm(np.cross(a, b), axis=1)
            t = rng.choice(len(w), n, p=w / w.sum())
            r1, r2 = rng.uniform(size=(2, n))
            flip = r1 + r2 > 1
            r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
            p = v0 + r1[:, None] * a[t] + r2[:, None] * b[t]
            out_xy = p[:, :2] + 0.05 * nv[:2] / max(np.linalg.norm(nv[:2]), 1e-12)
            out.append(p[top(out_xy[:, 0], out_xy[:, 1]) < p[:, 2]])
    return np.concatenate(out) if out else np.zeros((0, 3))


def scan(buildings: Sequence, style: ScanStyle, seed: int = 0,
         ground: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> PointCloud:
    """A point cloud of ``buildings`` (objects with ``footprint`` and ``parts``, e.g. the roof library's) in
    ``style``: classification (2 ground, 6 building, 1 unclassified), return_number, number_of_returns and
    point_source_id (the index of the building a point was scanned on, 0 for terrain)."""
    ground = ground or ground_z
    rng = np.random.default_rng(seed)
    fps = [b.footprint for b in buildings]
    groups = shapely.union_all([fp.buffer(style.ring, join_style="mitre") for fp in fps])
    tree = shapely.STRtree(fps)
    disk = _disk(style.round_radius)
    chunks: list[dict[str, np.ndarray]] = []
    for area in shapely.get_parts(groups):
        near = tree.query(area, predicate="intersects")
        parts = [p for i in near for p in buildings[i].parts]
        xy = _positions(area, style, rng)
        top = lambda x, y, parts=parts: surface(parts, ground, x, y)  # noqa: E731
        z = np.mean([top(xy[:, 0] + dx, xy[:, 1] + dy) for dx, dy in disk], axis=0)
        owner = np.zeros(len(xy), np.int64)
        for i in near:
            owner[shapely.contains_xy(fps[i], xy[:, 0], xy[:, 1])] = i + 1
        roof = owner > 0
        z = z + rng.normal(0.0, style.sigma, len(z)) + np.where(roof, style.offset, 0.0)
        cls = np.where(roof, 6, 2).astype(np.uint8)
        wrong = roof & (rng.uniform(size=len(z)) < style.mislabel)
        cls[wrong] = rng.choice(np.array([1, 2], np.uint8), int(wrong.sum()))
        chunks.append({"x": xy[:, 0], "y": xy[:, 1], "z": z, "classification": cls,
                       "return_number": np.ones(len(z), np.uint8), "number_of_returns": np.ones(len(z), np.uint8),
                       "point_source_id": owner.astype(np.uint16)})
        if style.wall_density > 0:
            w = _wall_points(parts, top, style.wall_density, rng)
            w[:, 2] += rng.normal(0.0, style.sigma, len(w))
            k = len(w)
            chunks.append({"x": w[:, 0], "y": w[:, 1], "z": w[:, 2], "classification": np.full(k, 6, np.uint8),
                           "return_number": np.full(k, 2, np.uint8), "number_of_returns": np.full(k, 2, np.uint8),
                           "point_source_id": np.zeros(k, np.uint16)})
    data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return PointCloud(data, pyproj.CRS(CRS))
