"""Compare building models with ground truth: roof surface height error, footprint IoU, roof type accuracy, a
roof point sampler for 2.5D truth solids, and where the point-to-model error comes from (used by the accuracy tests
and the benchmark)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

from cim.buildings.mesh import DistanceField, face_plane
from cim.buildings.model import BuildingModel
from cim.cityjson import BuildingGeometry


def roof_faces(geom: BuildingGeometry) -> list[np.ndarray]:
    """The RoofSurface faces that face upwards (2.5D roof)."""
    out = []
    for f, s in zip(geom.faces, geom.semantics):
        if s == "RoofSurface" and face_plane(f)[0][2] > 1e-6:
            out.append(f)
    return out


def roof_planes(geom: BuildingGeometry, angle_deg: float = 3.0, offset: float = 0.15
                ) -> list[tuple[np.ndarray, float]]:
    """The distinct planes (unit normal, offset) of a solid's upward roof faces: faces whose normals agree
    within ``angle_deg`` and whose planes are within ``offset`` of each other count once."""
    out: list[tuple[np.ndarray, float]] = []
    for f in roof_faces(geom):
        n, d = face_plane(f)
        c = f.mean(axis=0)
        if not any(n @ m > np.cos(np.radians(angle_deg)) and abs(m @ c - e) < offset for m, e in out):
            out.append((n, d))
    return out


def footprint_of(geom: BuildingGeometry) -> Polygon:
    """2D outline of a solid: the union of its ground faces (or of all faces' projections)."""
    polys = [Polygon(f[:, :2]) for f, s in zip(geom.faces, geom.semantics) if s == "GroundSurface"]
    if not polys:
        polys = [Polygon(f[:, :2]) for f in geom.faces if len(f) >= 3]
    return shapely.union_all([shapely.make_valid(p) for p in polys if p.area > 0], grid_size=1e-6)


def roof_height_at(geom: BuildingGeometry, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of the highest roof face above each (x, y); NaN where no roof face covers the point."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.full(len(x), -np.inf)
    for f in roof_faces(geom):
        n, d = face_plane(f)
        inside = shapely.intersects_xy(Polygon(f[:, :2]), x, y)  # points on a shared edge count for both faces
        if not inside.any():
            continue
        zf = (d - n[0] * x[inside] - n[1] * y[inside]) / n[2]
        z[inside] = np.maximum(z[inside], zf)
    z[~np.isfinite(z)] = np.nan
    return z


def sample_roof_points(geom: BuildingGeometry, density: float, noise: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Points (n, 3) on the roof of a 2.5D solid, ``density`` per m² in plan, Gaussian height noise."""
    fp = footprint_of(geom)
    minx, miny, maxx, maxy = fp.bounds
    n = rng.poisson(density * (maxx - minx) * (maxy - miny))
    x = rng.uniform(minx, maxx, n)
    y = rng.uniform(miny, maxy, n)
    z = roof_height_at(geom, x, y)
    ok = np.isfinite(z)
    return np.column_stack([x[ok], y[ok], z[ok] + rng.normal(0.0, noise, ok.sum())])


def roof_rmse(model: BuildingGeometry, truth: BuildingGeometry | Sequence[BuildingGeometry],
              spacing: float = 0.25, *, remove_offset: bool = False) -> float:
    """RMSE (m) of the model's roof height against the truth roof (one solid, or several that the model covers
    together) on a regular grid inside the truth footprint(s); with ``remove_offset`` after subtracting the
    median height difference (a cloud's own systematic offset, e.g. of image matching)."""
    truths = [truth] if isinstance(truth, BuildingGeometry) else list(truth)
    fp = shapely.union_all([footprint_of(t) for t in truths])
    minx, miny, maxx, maxy = fp.bounds
    gx, gy = np.meshgrid(np.arange(minx + spacing / 2, maxx, spacing), np.arange(miny + spacing / 2, maxy, spacing))
    x, y = gx.ravel(), gy.ravel()
    inside = shapely.contains_xy(fp.buffer(-0.05), x, y)
    x, y = x[inside], y[inside]
    zt = np.fmax.reduce([roof_height_at(t, x, y) for t in truths])
    zm = roof_height_at(model, x, y)
    ok = np.isfinite(zt)
    # where the model has no roof above a truth roof point, count the full truth height above ground as error
    zm = np.where(np.isfinite(zm), zm, np.nanmin(np.concatenate([f[:, 2] for f in model.faces])))
    d = zm[ok] - zt[ok]
    if remove_offset and len(d):
        d = d - np.median(d)
    return float(np.sqrt(np.mean(d**2)))


def iou(a: Polygon, b: Polygon) -> float:
    """Intersection over union of two polygons."""
    u = a.union(b).area
    return float(a.intersection(b).area / u) if u > 0 else 0.0


def covered_truths(model: Polygon, truths: Sequence[Polygon], share: float = 0.5) -> list[int]:
    """Indices of the truth footprints whose area lies at least ``share`` inside ``model`` (a derived footprint
    of touching buildings, e.g. a terrace, covers several)."""
    tree = shapely.STRtree(list(truths))
    return [int(i) for i in tree.query(model, predicate="intersects")
            if model.intersection(truths[i]).area >= share * truths[i].area]


def match_by_location(models: Sequence[Polygon], truths: Sequence[Polygon]) -> list[int | None]:
    """For each model footprint the index of the truth footprint it overlaps most (None when none)."""
    tree = shapely.STRtree(list(truths))
    out: list[int | None] = []
    for m in models:
        cand = tree.query(m, predicate="intersects")
        if len(cand) == 0:
            out.append(None)
            continue
        areas = [m.intersection(truths[i]).area for i in cand]
        out.append(int(cand[int(np.argmax(areas))]))
    return out


def error_sources(models: Sequence[BuildingModel], building_xyz: np.ndarray, *, boundary: float = 0.75,
                  reach: float = 1.0) -> dict[str, float]:
    """Where the squared 3D point-to-model distances of the LoD2.2 models come from, as shares of their sum:
    ``neighbour`` (points closer to the model of a building whose footprint lies within ``reach``: footprint or
    label mismatch), ``boundary`` (other points within ``boundary`` of the footprint's outline), ``above`` /
    ``below`` (other points above or below the model's roof: unmodelled structures, missing or wrong planes);
    ``rmse`` is the RMSE over all these points."""
    tree = shapely.STRtree([m.footprint for m in models])
    fields = [DistanceField(m.best.faces) for m in models]
    sums = dict.fromkeys(("neighbour", "boundary", "above", "below"), 0.0)
    count = 0
    for i, m in enumerate(models):
        if m.lod22 is None:
            continue
        pts = building_xyz[shapely.contains_xy(m.footprint, building_xyz[:, 0], building_xyz[:, 1])]
        d = fields[i](pts)
        other = np.full(len(pts), np.inf)
        for j in tree.query(m.footprint.buffer(reach)):
            if j != i:
                other = np.fmin(other, fields[j](pts))
        nb = other < d
        edge = ~nb & (shapely.distance(m.footprint.boundary, shapely.points(pts[:, :2])) < boundary)
        above = ~nb & ~edge & (pts[:, 2] > roof_height_at(m.lod22, pts[:, 0], pts[:, 1]))
        below = ~nb & ~edge & ~above
        for key, mask in zip(sums, (nb, edge, above, below)):
            sums[key] += float(np.sum(d[mask] ** 2))
        count += len(d)
    total = sum(sums.values())
    out = {k: round(v / total, 3) if total else 0.0 for k, v in sums.items()}
    out["rmse"] = round(float(np.sqrt(total / count)), 3) if count else 0.0
    return out
