"""Writers for the synthetic city's files: LAZ, footprints GeoPackage, true DTM, true CityJSON, truth JSON.

Every file goes through :mod:`cim.fileutil` (atomic) and is deterministic (no timestamps, sorted keys).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyproj
import rasterio
import shapely
from affine import Affine

from cim import crs as crs_mod
from cim.cityjson import BuildingGeometry, jsonable, write_cityjson
from cim.fileutil import atomic_write, write_text_atomic
from cim.io import las
from cim.points import PointCloud
from cim.synth import roofs
from cim.synth.scene import Scene

#: a fixed "current date" for GDAL's GeoPackage bookkeeping, so the file is byte-identical run after run
_GPKG_DATE = "2026-01-01T00:00:00.000Z"


GPS_EPOCH = datetime.datetime(1980, 1, 6, tzinfo=datetime.timezone.utc)
LEAP_SECONDS = 18  # GPS - UTC since 2017-01-01


def gps_to_utc(gps_seconds: float) -> datetime.datetime:
    """UTC time of GPS seconds (since 1980-01-06, no leap seconds), for dates from 2017 on."""
    return GPS_EPOCH + datetime.timedelta(seconds=gps_seconds - LEAP_SECONDS)


def write_laz(path: Path, points: dict[str, np.ndarray], crs: pyproj.CRS, gps_start: float) -> Path:
    """Write the simulated points (x, y, z world + LAS attributes) as LAS 1.4 LAZ with the CRS as WKT; the header's
    creation date is the survey day (so files do not change with the day they are generated)."""
    return las.write(path, PointCloud(dict(points), crs), creation_date=gps_to_utc(gps_start).date())


@contextmanager
def _gdal_option(name: str, value: str) -> Iterator[None]:
    previous = pyogrio.get_gdal_config_option(name)
    pyogrio.set_gdal_config_options({name: value})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({name: previous})


def write_footprints(path: Path, scene: Scene, crs: pyproj.CRS) -> Path:
    """Building footprints as a GeoPackage layer ``footprints`` (horizontal CRS) with the roof truth attributes."""
    buildings = scene.buildings
    geometry = shapely.to_wkb(np.array([b.footprint for b in buildings], dtype=object), output_dimension=2)
    fields = ["id", "roof_type", "kind", "ground_height", "eave_height", "ridge_height"]
    field_data = [
        np.array([b.id for b in buildings], dtype=object),
        np.array([b.roof_type for b in buildings], dtype=np.int32),
        np.array([b.kind for b in buildings], dtype=object),
        np.array([round(b.ground_height, 3) for b in buildings]),
        np.array([round(b.eave_height, 3) for b in buildings]),
        np.array([round(b.ridge_height, 3) for b in buildings]),
    ]
    horizontal = crs_mod.horizontal_part(crs)
    with atomic_write(path) as tmp, _gdal_option("OGR_CURRENT_DATE", _GPKG_DATE):
        pyogrio.raw.write(tmp, geometry, field_data, fields, layer="footprints", driver="GPKG",
                          geometry_type="Polygon", crs=horizontal.to_wkt())
    return path


def write_dtm(path: Path, scene: Scene, crs: pyproj.CRS, resolution: float) -> Path:
    """The true bare-earth DTM (terrain mesh sampled at cell centres), float32 GeoTIFF, tiled, deflate."""
    e = scene.config.extent
    n = int(round(e / resolution))
    centres = (np.arange(n) + 0.5) * resolution
    gx, gy = np.meshgrid(centres, centres[::-1])
    z = (scene.terrain_height_local(gx, gy) + scene.origin[2]).astype(np.float32)
    transform = Affine(resolution, 0.0, scene.origin[0], 0.0, -resolution, scene.origin[1] + n * resolution)
    profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "float32",
               "crs": rasterio.crs.CRS.from_wkt(crs.to_wkt()), "transform": transform, "nodata": -9999.0,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "predictor": 3}
    with atomic_write(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(z, 1)
            dst.update_tags(AREA_OR_POINT="Area")
    return path


def building_geometries(scene: Scene) -> list[BuildingGeometry]:
    """The true buildings as LoD2.2 solids for :mod:`cim.cityjson`."""
    return [
        BuildingGeometry(
            id=b.id, faces=b.faces, semantics=list(b.semantics), lod="2.2",
            attributes={"roofType": str(b.roof_type), "measuredHeight": round(b.ridge_height - b.ground_height, 3),
                        "cim_kind": b.kind, "cim_ground_height": round(b.ground_height, 3),
                        "cim_eave_height": round(b.eave_height, 3)},
        )
        for b in scene.buildings
    ]


def write_buildings(path: Path, scene: Scene, crs: pyproj.CRS) -> Path:
    """The true LoD2.2 buildings as CityJSON 2.0 (via :mod:`cim.cityjson`)."""
    return write_cityjson(path, building_geometries(scene), crs)


def _rounded(value: float) -> float:
    return round(value, 9) if abs(value) < 1.0 else round(value, 6)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Deterministic, human-readable JSON (sorted keys, floats rounded to 1e-6, below 1 in magnitude to 1e-9)."""
    write_text_atomic(path, json.dumps(jsonable(data, _rounded), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


def class_counts(classification: np.ndarray) -> dict[str, int]:
    """Counts per ASPRS class as a JSON-able dict (keys are class codes as strings)."""
    values, counts = np.unique(classification, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def roof_planes(faces: list[np.ndarray], semantics: list[str]) -> list[dict[str, Any]]:
    """The roof faces as planes: unit normal (up) and a point on the plane (the face's vertex mean; map
    coordinates are too large for a stable ``n·p = d`` offset), slope and aspect (deg, aspect clockwise from north,
    None for flat), area (m², true, not projected)."""
    planes = []
    for face, sem in zip(faces, semantics):
        if sem != "RoofSurface":
            continue
        n = roofs.newell_normal(face)
        ref = face.mean(axis=0)
        area = 0.5 * float(np.linalg.norm(roofs.newell_vector(face - ref)))
        slope = float(np.degrees(np.arccos(np.clip(n[2], -1.0, 1.0))))
        aspect = None if slope < 1e-6 else float(np.mod(np.degrees(np.arctan2(n[0], n[1])), 360.0))
        planes.append({"normal": n, "point": ref, "slope": slope, "aspect": aspect, "area": area})
    return planes


def building_truth(scene: Scene) -> list[dict[str, Any]]:
    """Per-building truth records for truth.json."""
    return [
        {"id": b.id, "roof_type": b.roof_type, "roof_name": roofs.ROOF_TYPES[b.roof_type], "kind": b.kind,
         "ground_height": b.ground_height, "eave_height": b.eave_height, "ridge_height": b.ridge_height,
         "footprint_area": b.footprint.area, "centroid": [b.footprint.centroid.x, b.footprint.centroid.y],
         "volume": roofs.solid_volume(b.faces), "roof_planes": roof_planes(b.faces, b.semantics)}
        for b in scene.buildings
    ]
