"""STAC items for panoramas: one item per panorama (Point geometry, view and perspective-imagery fields).

``view:azimuth`` is the true-north heading of the panorama centre; ``pers:*`` follows the perspective-imagery
extension proposal (``pers:perspective_center`` in the job CRS, ``pers:crs`` / ``pers:vertical_crs`` as EPSG
codes, ``pers:rotation_matrix`` row-major 3x3). In cim the matrix is world_from_body (job grid frame; body x
forward, y left, z up), written down in ``cim:convention`` so no reader has to guess.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac

from cim import crs as cimcrs
from cim.fileutil import atomic_dir
from cim.panoramas.georef import Panorama

__all__ = ["VIEW_EXTENSION", "PERS_EXTENSION", "panorama_item", "write_collection"]

VIEW_EXTENSION = "https://stac-extensions.github.io/view/v1.0.0/schema.json"
PERS_EXTENSION = "https://stac-extensions.github.io/perspective-imagery/v1.0.0/schema.json"

_MEDIA = {
    "image": ("image/jpeg", ["data", "visual"]),
    "tiles": ("application/json", ["tiles"]),
    "preview": ("image/jpeg", ["thumbnail"]),
    "depth": ("image/tiff; application=geotiff; profile=cloud-optimized", ["data", "depth"]),
    "report": ("application/json", ["metadata"]),
}


def panorama_item(pano: Panorama, href_prefix: str = "") -> pystac.Item:
    """A STAC item for one panorama; asset hrefs are ``href_prefix + products[...]``."""
    crs = cimcrs.resolve(pano.crs)
    horizontal = cimcrs.horizontal_part(crs).to_epsg()
    vertical = cimcrs.vertical_part(crs)
    when = dt.datetime.fromisoformat(pano.datetime.replace("Z", "+00:00")) if pano.datetime else dt.datetime(
        1970, 1, 1, tzinfo=dt.timezone.utc)
    h_true = pano.angles_true[0]
    heading, pitch, roll = pano.angles
    props = {
        "view:azimuth": round(h_true % 360.0, 6),
        "pers:perspective_center": [round(v, 4) for v in pano.position],
        "pers:crs": horizontal,
        "pers:rotation_matrix": [round(float(v), 9) for v in pano.pose.rotation.ravel()],
        "pers:interior_orientation": {"camera_model": "spherical", "field_of_view": 360,
                                      "sensor_array_dimensions": [pano.width or 0, pano.height or 0]},
        "cim:gps_time": pano.gps_time,
        "cim:heading": round(heading, 6), "cim:pitch": round(pitch, 6), "cim:roll": round(roll, 6),
        "cim:quaternion": [round(v, 9) for v in pano.quaternion],
        "cim:height_ellipsoidal": round(pano.h_ell, 4),
        "cim:convention": "rotation world_from_body, grid frame of pers:crs, body x forward y left z up",
    }
    if vertical is not None and vertical.to_epsg():
        props["pers:vertical_crs"] = vertical.to_epsg()
    geometry = {"type": "Point", "coordinates": [round(pano.lon, 9), round(pano.lat, 9)]}
    bbox = [round(pano.lon, 9), round(pano.lat, 9), round(pano.lon, 9), round(pano.lat, 9)]
    item = pystac.Item(pano.name, geometry, bbox, when, props, stac_extensions=[VIEW_EXTENSION, PERS_EXTENSION])
    for key, rel in sorted(pano.products.items()):
        media, roles = _MEDIA.get(key, ("application/octet-stream", ["data"]))
        item.add_asset(key, pystac.Asset(href=href_prefix + rel, media_type=media, roles=roles))
    return item


def write_collection(panoramas: list[Panorama], folder: str | Path, *, collection_id: str = "panoramas") -> Path:
    """Write a self-contained STAC collection of the panoramas into ``folder`` (replaced atomically)."""
    folder = Path(folder)
    lons = np.array([p.lon for p in panoramas])
    lats = np.array([p.lat for p in panoramas])
    times = sorted(p.datetime for p in panoramas if p.datetime)
    start = dt.datetime.fromisoformat(times[0].replace("Z", "+00:00")) if times else None
    end = dt.datetime.fromisoformat(times[-1].replace("Z", "+00:00")) if times else None
    extent = pystac.Extent(
        pystac.SpatialExtent([[float(lons.min()), float(lats.min()), float(lons.max()), float(lats.max())]]),
        pystac.TemporalExtent([[start, end]]),
    )
    collection = pystac.Collection(collection_id, "Georeferenced, anonymized 360° panoramas", extent,
                                   license="other")
    for pano in sorted(panoramas, key=lambda p: p.name):
        # items live in <folder>/<id>/<id>.json; products are relative to the folder's parent
        collection.add_item(panorama_item(pano, href_prefix="../../"))
    with atomic_dir(folder) as tmp:
        collection.normalize_hrefs(str(tmp))
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "collection.json"
