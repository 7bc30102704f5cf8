"""Whole-cloud building reconstruction (used by the stages, the CLI and the benchmark): classify when needed,
choose or derive footprints for the tile, reconstruct, summarise, and round-trip models through CityJSON."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from cim.buildings.evaluate import footprint_of
from cim.buildings.footprints import Footprint, derive_footprints
from cim.buildings.ground_dtm import follows_points
from cim.buildings.model import BuildingModel, ReconstructionParams, has_classes, reconstruct, split_points
from cim.cityjson import BuildingGeometry, read_cityjson
from cim.points import PointCloud

log = logging.getLogger("cim.buildings.run")


def ground_mask(cloud: PointCloud, classify: str = "auto") -> np.ndarray:
    """Ground points: ASPRS class 2 when the cloud has any (``classify`` = "auto"/"never"), else SMRF ground
    classification (cim.terrain) when ``classify`` is "auto" or "always"."""
    cls = cloud.get("classification")
    has_ground = cls is not None and bool((cls == 2).any())
    if classify == "always" or (classify == "auto" and not has_ground):
        from cim.terrain.ground import classify_ground

        return classify_ground(cloud)
    if cls is None:
        return np.zeros(len(cloud), bool)
    return cls == 2


def in_bounds(point: tuple[float, float], bounds: Sequence[float] | None) -> bool:
    """Whether ``point`` lies in [minx, maxx) x [miny, maxy) (always True without bounds)."""
    return bounds is None or (bounds[0] <= point[0] < bounds[2] and bounds[1] <= point[1] < bounds[3])


def dtm_ground(values: np.ndarray, grid, percentile: float = 10.0, offset: float = 1.5,
               step: float = 0.5):
    """``ground_fn`` sampling a DTM (``cim.terrain`` grid) on a ring ``offset`` outside the footprint."""
    from cim.terrain.dtm import sample_grid

    def ground(poly) -> float | None:
        ring = poly.buffer(offset, join_style="mitre").exterior
        n = max(8, int(ring.length / step))
        pts = np.array([ring.interpolate(i / n, normalized=True).coords[0] for i in range(n)])
        z = sample_grid(values, grid, pts[:, 0], pts[:, 1])
        z = z[np.isfinite(z)]
        return float(np.percentile(z, percentile)) if len(z) else None

    return ground


def _lazy_dtm_ground(cloud: PointCloud, gm: np.ndarray, percentile: float):
    """``ground_fn`` from a 1 m DTM of the cloud's ground points, computed on first use (footprints far from
    any ground point: courtyards, large roofs)."""
    cache: dict[str, Any] = {}

    def ground(poly) -> float | None:
        if "fn" not in cache:
            from cim.terrain.dtm import dtm_grid
            from cim.terrain.grid import GridSpec

            b = cloud.bounds
            grid = GridSpec.from_bounds(b.minx, b.miny, b.maxx, b.maxy, 1.0)
            values = dtm_grid(cloud.xyz[gm], grid)
            cache["fn"] = dtm_ground(values, grid, percentile) if np.isfinite(values).any() else (lambda p: None)
        return cache["fn"](poly)

    return ground


NOISE_CLASSES = (7, 18)  # ASPRS low and high noise
EDGE_MARGIN = 1.0  # with building points by height, "ground" points this close outside a footprint are roof edges
#: ``ground_reason`` of a building whose ground is estimated because the DTM was made from its roof points
DTM_ON_ROOFS = ("no ground points near the footprint; the DTM was not used: it runs through the points labelled "
                "ground inside the footprints (roofs)")


def inside_footprints(footprints: Sequence[Footprint], x: np.ndarray, y: np.ndarray,
                      margin: float = 0.0) -> np.ndarray:
    """Mask of the points inside any footprint (grown by ``margin``)."""
    union = shapely.union_all([f.polygon.buffer(margin, join_style="mitre") if margin else f.polygon
                               for f in footprints])
    shapely.prepare(union)
    return shapely.contains_xy(union, x, y)


def wrong_classes(classification: np.ndarray | None, inside: np.ndarray, max_wrong_share: float = 0.1) -> bool:
    """Whether the classes inside the footprints look wrong: more than ``max_wrong_share`` of those points are
    unclassified (1) or ground (2) (Delft AHN3: 5 %; the held-out image-matching set: a fifth of some roofs)."""
    if classification is None or not inside.any():
        return classification is None
    return float(np.isin(classification[inside], (1, 2)).mean()) > max_wrong_share


def reconstruct_cloud(
    cloud: PointCloud,
    footprints: Sequence[Footprint] | None,
    params: ReconstructionParams | None = None,
    *,
    core_bounds: Sequence[float] | None = None,
    lod2: bool = True,
    classify: str = "auto",
    building_classes: Sequence[int] = (6,),
    dtm: tuple[np.ndarray, Any] | None = None,
    min_planar_share: float = 0.5,
    building_points: str = "auto",
    ground: np.ndarray | None = None,
    skip: Collection[str] = (),
    outlines: Sequence[Footprint] | None = None,
) -> list[BuildingModel]:
    """Models of the buildings whose footprint's representative point lies in ``core_bounds``.

    ``cloud`` should hold the tile's buffer points too (context for buildings crossing the tile edge). Without
    ``footprints`` they are derived from the building points (outline, regularised). Ground heights come from
    ``dtm`` (values, GridSpec) when given, else from the ground points around each footprint, else from a DTM of
    the ground points. Outlines derived from unclassified points (no building class) are kept only when at
    least ``min_planar_share`` of their points lie within 0.2 m of the LoD2.2 roof (trees do not).

    ``building_points``: "classes" (the building classes), "height" (with footprints: every point inside a
    footprint more than ``params.height_threshold`` above its ground, whatever its class; noise excluded; ground
    points inside footprints are no ground) or "auto" ("height" when more than ``max_wrong_share`` of the points
    inside the footprints are labelled unclassified or ground, as in image-matching clouds; otherwise a building
    whose points labelled 1 or 2 more than ``height_threshold`` above its ground outnumber its building-class
    points twice takes them too: attribute ``building_points`` = "height").

    ``ground``: the cloud's ground mask when the caller has it (else :func:`ground_mask`); ``skip``: ids of
    footprints modelled elsewhere (they still count as footprints, e.g. for the ground points around them);
    ``outlines``: without ``footprints``, the outlines :func:`derived_outlines` gave for this cloud.
    Every model's ``ground_source`` is one of :data:`cim.buildings.model.GROUND_SOURCES`.
    """
    gm = ground_mask(cloud, classify) if ground is None else ground
    cls = cloud.get("classification")
    bm, gm = split_points(cloud.x, cloud.y, cloud.z, cls, building_classes=building_classes, ground_mask=gm)
    xyz = cloud.xyz
    derived = footprints is None
    if derived:
        footprints = derive_footprints(xyz[bm, 0], xyz[bm, 1]) if outlines is None else outlines
    chosen = [f for f in footprints if f.id not in skip and in_bounds(f.representative_point, core_bounds)]
    p = params or ReconstructionParams()
    by_height, other, rejected = False, np.zeros((0, 3)), False
    if not derived and building_points != "classes" and len(footprints):
        inside = inside_footprints(footprints, cloud.x, cloud.y)
        by_height = building_points == "height" or wrong_classes(cls, inside)
        if by_height:
            log.info("building points by height inside the footprints (building_points=%s)", building_points)
            bm = inside & ~np.isin(cls, NOISE_CLASSES) if cls is not None else inside
            if dtm is not None and follows_points(dtm, xyz[gm & inside]):
                log.warning("the DTM follows the points labelled ground inside the footprints (roofs): not used "
                            "for ground heights")
                dtm, rejected = None, True
            gm = gm & ~inside_footprints(footprints, cloud.x, cloud.y, EDGE_MARGIN)  # edge points are no ground
        elif cls is not None:  # per building: the points labelled 1 or 2 inside it, in case its class 6 is missing
            other = xyz[inside & np.isin(cls, (1, 2))]
    if dtm is not None:
        models = reconstruct(chosen, xyz[bm], np.zeros((0, 3)), p, lod2=lod2, by_height=by_height, other_xyz=other,
                             ground_fn=dtm_ground(dtm[0], dtm[1], p.ground_percentile, p.ground_buffer / 2))
    else:
        models = reconstruct(chosen, xyz[bm], xyz[gm], p, lod2=lod2, by_height=by_height, other_xyz=other,
                             ground_fn=_lazy_dtm_ground(cloud, gm, p.ground_percentile) if gm.any() else None)
    if rejected:
        for m in models:
            if m.attributes["ground_source"] == "estimated":
                m.attributes["ground_reason"] = DTM_ON_ROOFS
    if derived and not has_classes(cls, building_classes) and lod2:
        # candidates from height alone include trees: keep outlines whose points lie on roof planes
        keep = [m for m in models if (m.attributes.get("within_20cm_lod22") or 0.0) >= min_planar_share]
        log.info("derived outlines: %d of %d kept as buildings (planar share >= %.2f)", len(keep), len(models),
                 min_planar_share)
        models = keep
    return models


def derived_outlines(cloud: PointCloud, ground: np.ndarray, building_classes: Sequence[int] = (6,)
                     ) -> list[Footprint]:
    """The building outlines derived from the cloud's building points (as :func:`reconstruct_cloud` derives them
    without footprints; ``ground``: the cloud's ground mask)."""
    bm, _ = split_points(cloud.x, cloud.y, cloud.z, cloud.get("classification"), building_classes=building_classes,
                         ground_mask=ground)
    return derive_footprints(cloud.x[bm], cloud.y[bm])


def geometries(models: Sequence[BuildingModel]) -> list[BuildingGeometry]:
    """All geometries of ``models`` in order (what the CityJSON writers take)."""
    return [g for m in models for g in m.geometries()]


def models_from_cityjson(path: str | Path) -> list[BuildingModel]:
    """Building models back from a CityJSON(Seq) file written by cim (attributes travel on the first LoD)."""
    by_id: dict[str, list[BuildingGeometry]] = {}
    for g in read_cityjson(path):
        by_id.setdefault(g.id, []).append(g)
    out = []
    for bid, geoms in by_id.items():
        attrs: dict[str, Any] = {}
        for g in geoms:
            attrs.update(g.attributes)
        m = BuildingModel(bid, footprint_of(geoms[0]), attrs)
        for g in geoms:
            if g.lod == "2.2":
                m.lod22 = g
            elif g.lod == "1.2":
                m.lod12 = g
            elif g.lod == "0":
                m.lod0 = g
        out.append(m)
    return out


def summarise(models: Sequence[BuildingModel]) -> dict[str, Any]:
    """Counts per status and roof type, the spread of the 3D point-to-model RMSE (``rmse_lod22``) per roof type,
    validity, ground sources and why grounds were estimated (JSON-able)."""
    status = Counter(m.attributes.get("status") for m in models)
    roof = Counter(str(m.attributes.get("roof_type")) for m in models)
    rmse: dict[str, list[float]] = defaultdict(list)
    for m in models:
        r = m.attributes.get("rmse_lod22")
        if r is not None:
            rmse[str(m.attributes.get("roof_type"))].append(float(r))
    with_lod22 = [m for m in models if m.lod22 is not None]
    with_lod12 = [m for m in models if m.lod12 is not None]
    return {
        "buildings": len(models),
        "with_model": sum(1 for m in models if m.best),
        "status": dict(sorted(status.items())),
        "roof_type": dict(sorted(roof.items())),
        "lod22": len(with_lod22),
        "lod12": len(with_lod12),
        "valid_lod22": sum(bool(m.attributes.get("valid_lod22")) for m in with_lod22),
        "valid_lod12": sum(bool(m.attributes.get("valid_lod12")) for m in with_lod12),
        "rmse_lod22_by_roof_type": {k: _spread(v) for k, v in sorted(rmse.items())},
        "not_modelled": [{"id": m.id, "status": m.attributes.get("status"), "reason": m.attributes.get("reason")}
                         for m in models if m.attributes.get("reason")],
        "ground_estimated": sorted(m.id for m in models if m.attributes.get("ground_flag")),
        "ground_source": dict(sorted(Counter(str(m.attributes.get("ground_source")) for m in models).items())),
        "ground_reason": dict(sorted(Counter(m.attributes["ground_reason"] for m in models
                                             if m.attributes.get("ground_reason")).items())),
    }


def _spread(values: Sequence[float]) -> dict[str, float]:
    """Count, median, mean, 90th percentile and maximum (m, rounded to mm)."""
    v = np.asarray(values, dtype=np.float64)
    return {"n": len(v), "median": round(float(np.median(v)), 3), "mean": round(float(np.mean(v)), 3),
            "p90": round(float(np.percentile(v, 90)), 3), "max": round(float(np.max(v)), 3)}


