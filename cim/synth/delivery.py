"""A simulated German LoD2 delivery: what a Land's survey authority hands out, rebuilt from exact truth.

Issue 14's held-out set (official Bavarian LoD2 buildings with their point clouds) stays held out; this is its
stand-in with fixed parameters: the roof library's plain shapes and houses (:mod:`cim.synth.rooflib`) scanned in
the image-matching style (:data:`cim.synth.scanstyles.IMAGE_MATCHING`), the cloud **clipped to the footprints**
(no ground points anywhere), 20 % of the roof points labelled 1 or 2 and, in :data:`ALL_MISLABELLED` of the
buildings, every roof point (the provider's classification missed them), positions in **DHDN / Gauss-Krüger
zone 4** (EPSG:31468, transformed exactly from ETRS89 / UTM 32 through BETA2007) and heights declared **DHHN92**
(EPSG:5783: the library's heights, unchanged), no DTM. The footprints are the official LoD2 file itself (CityGML
2.0 in the AdV profile, ``bldg:roofType`` = the truth type, the truth roofs as the LoD2 surfaces), as a user has
it, and the same outlines as GeoJSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely

from cim import crs as crs_mod
from cim.buildings.model import BuildingModel
from cim.citygml.writer import write_citygml
from cim.cityjson import BuildingGeometry
from cim.fileutil import atomic_write
from cim.io import las
from cim.points import PointCloud
from cim.synth import rooflib
from cim.synth.rooflib import HOUSE_GROUPS, LibraryBuilding, ground_z, roof_library
from cim.synth.scanstyles import CRS as LIBRARY_CRS
from cim.synth.scanstyles import IMAGE_MATCHING, scan

DELIVERY_CRS = "EPSG:31468+5783"  # DHDN / 3-degree Gauss-Kruger zone 4 + DHHN92 height
#: moves the library's grid (UTM 32 at 500 / 5480 km) to Munich, inside GK zone 4 and BETA2007's area
SHIFT = (191_000.0, -146_000.0)
ALL_MISLABELLED = 0.1  # share of buildings whose roof points are all labelled 1 or 2
HOUSE_ROWS = 4  # the houses' grid squares start this many library spacings north of the plain shapes
FUNCTION = "31001_1000"  # ALKIS Gebaeudefunktion "Wohngebaeude"


@dataclass(frozen=True)
class Delivery:
    """The files of a simulated delivery and its truth (buildings in the delivery CRS)."""

    points: Path  # LAZ, EPSG:31468+5783, classes 1/2/6, clipped to the footprints
    official: Path  # CityGML 2.0 (AdV profile): truth roofs and roof types; the footprints a user has
    footprints_geojson: Path  # the same outlines as GeoJSON (EPSG:31468)
    buildings: list[LibraryBuilding]
    mislabelled: list[str]  # ids of the buildings whose roof points are all labelled 1 or 2


XYMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _moved(b: LibraryBuilding, offset: np.ndarray, fn: XYMap | None = None) -> LibraryBuilding:
    """``b`` translated by ``offset`` (x, y, z), or mapped by ``fn`` (x, y arrays -> x, y arrays) when given."""
    def move(xyz: np.ndarray) -> np.ndarray:
        if fn is None:
            return xyz + offset
        x, y = fn(xyz[:, 0], xyz[:, 1])
        return np.column_stack([x, y, xyz[:, 2]])

    def geom(g: BuildingGeometry) -> BuildingGeometry:
        return dataclasses.replace(g, faces=[move(f) for f in g.faces])

    fp = shapely.transform(b.footprint, lambda xy: move(np.column_stack([xy, np.zeros(len(xy))]))[:, :2])
    return dataclasses.replace(b, footprint=fp, ground=b.ground + float(offset[2]) if fn is None else b.ground,
                               solids=[geom(s) for s in b.solids], extras=[geom(s) for s in b.extras])


def delivery_buildings(seed: int = 0, *, scale: float = 0.4, houses: float = 1.0) -> list[LibraryBuilding]:
    """The plain roof library (``scale``) and, north of it, the houses with dormers, chimneys and annexes
    (``houses``), in the library frame; ids ``p…`` (plain) and ``h…`` (houses)."""
    plain = [dataclasses.replace(b, id=f"p{b.id[1:]}") for b in roof_library(seed, scale=scale)]
    dy = HOUSE_ROWS * 45.0 + max(b.footprint.bounds[3] for b in plain) - rooflib.ORIGIN[1]
    dz = float(ground_z(0.0, dy) - ground_z(0.0, 0.0))  # the terrain is a plane: houses stay on it
    out = list(plain)
    for b in roof_library(seed + 1, scale=houses, groups=HOUSE_GROUPS):
        out.append(dataclasses.replace(_moved(b, np.array([0.0, dy, dz])), id=f"h{b.id[1:]}"))
    return out


def _official(buildings: list[LibraryBuilding]) -> list[BuildingModel]:
    """The truth as the official LoD2 models: the roof is the upper envelope of the truth solids' faces."""
    out = []
    for b in buildings:
        faces = [f for s in b.solids for f in s.faces]
        sem = [t for s in b.solids for t in s.semantics]
        geom = BuildingGeometry(b.id, faces, sem, lod="2", geometry_type="MultiSurface")
        out.append(BuildingModel(b.id, b.footprint, {"roof_type": b.roof_type, "function": FUNCTION}, lod22=geom))
    return out


def german_delivery(folder: str | Path, seed: int = 0, *, scale: float = 0.4, houses: float = 1.0) -> Delivery:
    """Write the simulated delivery into ``folder`` (``points.laz``, ``lod2.gml``, ``footprints.geojson``);
    deterministic for ``seed``. ``scale`` 0.4 and ``houses`` 1 give 42 buildings."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    library = delivery_buildings(seed, scale=scale, houses=houses)
    cloud = scan(library, IMAGE_MATCHING, seed)
    inside = cloud.point_source_id > 0  # clipped to the footprints: no ground points around the buildings
    cls = np.asarray(cloud.classification)[inside]
    owner = np.asarray(cloud.point_source_id)[inside].astype(np.int64) - 1
    rng = np.random.default_rng(seed + 7)
    bad = np.sort(rng.choice(len(library), max(1, round(ALL_MISLABELLED * len(library))), replace=False))
    hit = np.isin(owner, bad)
    cls[hit] = rng.choice(np.array([1, 2], np.uint8), int(hit.sum()))
    target = pyproj.CRS(DELIVERY_CRS)
    to_gk = crs_mod.exact_transformer(pyproj.CRS(LIBRARY_CRS), crs_mod.horizontal_part(target))

    def gk(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return crs_mod.transform_points(to_gk, x + SHIFT[0], y + SHIFT[1])

    x, y = gk(np.asarray(cloud.x)[inside], np.asarray(cloud.y)[inside])
    points = PointCloud({"x": x, "y": y, "z": np.asarray(cloud.z)[inside], "classification": cls,
                         "return_number": np.ones(len(x), np.uint8), "number_of_returns": np.ones(len(x), np.uint8)},
                        target)
    buildings = [_moved(b, np.zeros(3), gk) for b in library]
    laz = las.write(folder / "points.laz", points, scale=0.01)
    gml = write_citygml(folder / "lod2.gml", _official(buildings), target, name="simulated AdV LoD2 delivery")
    features = [{"type": "Feature", "properties": {"gml_id": b.id, "dachform": b.roof_type},
                 "geometry": shapely.geometry.mapping(b.footprint)} for b in buildings]
    geojson = folder / "footprints.geojson"
    with atomic_write(geojson) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
            "name": "urn:ogc:def:crs:EPSG::31468"}}, "features": features}))
    return Delivery(laz, gml, geojson, buildings, [library[i].id for i in bad])


def true_dtm(path: str | Path, delivery: Delivery, resolution: float = 1.0, margin: float = 20.0) -> Path:
    """Write the library's true terrain under and around the delivery's buildings as a DTM GeoTIFF in the
    delivery CRS (what a user with the surveyor's DTM would pass with ``--dtm``): every cell centre taken back
    to the library frame exactly (BETA2007) and the terrain plane evaluated there."""
    from cim.terrain.grid import GridSpec
    from cim.terrain.raster import write_cog

    target = pyproj.CRS(DELIVERY_CRS)
    back = crs_mod.exact_transformer(crs_mod.horizontal_part(target), pyproj.CRS(LIBRARY_CRS))
    x0, y0, x1, y1 = shapely.total_bounds([b.footprint for b in delivery.buildings])
    grid = GridSpec.from_bounds(x0 - margin, y0 - margin, x1 + margin, y1 + margin, resolution)
    cx = grid.xmin + (np.arange(grid.width) + 0.5) * resolution
    cy = grid.ymax - (np.arange(grid.height) + 0.5) * resolution
    gx, gy = np.meshgrid(cx, cy)
    ux, uy = crs_mod.transform_points(back, gx.ravel(), gy.ravel())
    z = np.asarray(ground_z(ux - SHIFT[0], uy - SHIFT[1])).reshape(grid.shape)
    return write_cog(path, z, grid, target, description="true terrain of the simulated delivery")


#: the roof types issue 14 scores the official set on
MAIN_TYPES = (1000, 2100, 3100, 3200)


def _attributes(path: Path) -> dict[str, dict[str, Any]]:
    """The attributes of every building of cim's CityJSON(Seq) or CityGML product, by building id."""
    from cim.buildings.footprints import is_citygml
    from cim.citygml.reader import read_citygml
    from cim.cityjson import read_cityjson

    if is_citygml(path):
        return {b.name or b.id: b.attributes for b in read_citygml(path).buildings}
    return {g.id: g.attributes for g in read_cityjson(path) if g.attributes}


def score(models: str | Path, delivery: Delivery) -> dict[str, Any]:
    """Score cim's products (``buildings.city.json`` or ``buildings.gml``) against the delivery's truth: per
    building the roof types, status, ground source and error, and the roof height difference on a 0.5 m grid
    (:func:`cim.citygml.compare.roof_differences`); overall the type agreement (all, and on flat / shed / gable /
    hip as issue 14 counts it), the confusion pairs (``ours->truth``), the LoD2.2 share, the median per-building
    roof RMSE after removing that building's median offset, and the ground sources."""
    from cim.citygml.compare import load_buildings, match, roof_differences

    _, ours = load_buildings(models)
    _, official = load_buildings(delivery.official)
    attrs = _attributes(Path(models))
    truth = {b.id: b for b in delivery.buildings}
    rows = []
    for i, j, _ in match(ours, official, 0.5):
        a, t = ours[i], official[j]
        d = roof_differences(a, t, 0.5)
        at = attrs.get(a.id, {})
        rows.append({"id": t.id, "truth": t.roof_type, "ours": a.roof_type, "status": at.get("status"),
                     "ground_source": at.get("ground_source"),
                     "ground_error": None if "h_ground" not in at else at["h_ground"] - truth[t.id].ground,
                     "offset": float(np.median(d)) if len(d) else None,
                     "rmse_centred": float(np.sqrt(np.mean((d - np.median(d)) ** 2))) if len(d) else None})
    typed = [r for r in rows if r["ours"] is not None]
    main = [r for r in rows if r["truth"] in MAIN_TYPES]
    rmse = [r["rmse_centred"] for r in rows if r["rmse_centred"] is not None and r["status"] == "lod22"]
    ground = [r["ground_error"] for r in rows if r["ground_error"] is not None]
    return {
        "buildings": len(delivery.buildings), "matched": len(rows),
        "lod22_share": sum(r["status"] == "lod22" for r in rows) / max(len(delivery.buildings), 1),
        "status": dict(sorted(Counter(str(r["status"]) for r in rows).items())),
        "crashes": sum(str(r["status"]).endswith(":error") for r in rows),
        "type_agreement": sum(r["ours"] == r["truth"] for r in typed) / max(len(typed), 1),
        "type_agreement_main": sum(r["ours"] == r["truth"] for r in main) / max(len(main), 1),
        "type_pairs": {f"{o}->{t}": n for (o, t), n in sorted(Counter((r["ours"], r["truth"]) for r in rows
                                                                       if r["ours"] != r["truth"]).items(),
                                                               key=str)},
        "roof_rmse_centred_median": float(np.median(rmse)) if rmse else None,
        "roof_rmse_centred_p90": float(np.percentile(rmse, 90)) if rmse else None,
        "roof_offset_median": float(np.median([r["offset"] for r in rows if r["offset"] is not None])),
        "ground_source": dict(sorted(Counter(str(r["ground_source"]) for r in rows).items())),
        "ground_error_median": float(np.median(ground)) if ground else None,
        "rows": rows,
    }
