"""The STAC catalog of a job's products (pystac), with the projection and pointcloud extensions filled in."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyproj
import pystac
from pystac.extensions.pointcloud import PointcloudExtension, PhenomenologyType, Schema, SchemaType
from pystac.extensions.projection import ProjectionExtension

from cim import crs as crs_mod
from cim.fileutil import atomic_dir
from cim.pipeline.stage import Product

CATALOG_DIR = "stac"
CATALOG_FILE = "catalog.json"


def _wgs84_bbox(bounds: list[float], to_wgs84: pyproj.Transformer) -> list[float]:
    minx, miny, maxx, maxy = (bounds[0], bounds[1], bounds[3], bounds[4]) if len(bounds) == 6 else bounds
    lon0, lat0, lon1, lat1 = to_wgs84.transform_bounds(minx, miny, maxx, maxy)
    return [round(v, 8) for v in (lon0, lat0, lon1, lat1)]


def _geometry(bbox: list[float]) -> dict[str, Any]:
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _projection(crs: pyproj.CRS) -> tuple[str | None, str | None]:
    """``proj:code`` and, for a CRS without an EPSG code, ``proj:wkt2`` (looked up once per catalog: ``to_epsg``
    searches the EPSG database and took ~16 ms per item)."""
    epsg = crs.to_epsg()
    return (f"EPSG:{epsg}", None) if epsg else (None, crs.to_wkt())


def _item(product: Product, to_wgs84: pyproj.Transformer, projection: tuple[str | None, str | None],
          when: dt.datetime) -> pystac.Item:
    """The product's item, linked to the catalog one folder up (its root and parent)."""
    props = dict(product.properties)
    bounds = props.pop("bounds", None) or props.pop("bbox", None)
    bbox = _wgs84_bbox(bounds, to_wgs84) if bounds else None
    item_id = product.path.replace("/", "__")
    item = pystac.Item(item_id, _geometry(bbox) if bbox else None, bbox, when,
                       {"cim:kind": product.kind})
    item.add_asset("data", pystac.Asset(href=f"../../{product.path}", media_type=product.media_type,
                                         roles=list(product.roles)))
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code, wkt2 = projection
    if wkt2 is not None:
        proj.wkt2 = wkt2
    if bounds:
        proj.bbox = list(bounds)
    if "proj:shape" in props:
        proj.shape = props.pop("proj:shape")
    if "proj:transform" in props:
        proj.transform = props.pop("proj:transform")
    if "pc:count" in props:
        pc = PointcloudExtension.ext(item, add_if_missing=True)
        pc.count = props.pop("pc:count")
        pc.type = PhenomenologyType(props.pop("pc:type", "lidar"))
        pc.encoding = product.media_type
        pc.schemas = [Schema.create(s["name"], s["size"], SchemaType(s["type"])) for s in props.pop("pc:schemas", [])]
        if "pc:density" in props:
            pc.density = props.pop("pc:density")
    item.properties.update({k: v for k, v in props.items() if ":" in k or k.startswith("cim")})
    item.add_links([pystac.Link(rel, f"../{CATALOG_FILE}", media_type=pystac.MediaType.JSON)
                    for rel in (pystac.RelType.ROOT, pystac.RelType.PARENT)])
    return item


def write_catalog(out_dir: Path, name: str, products: list[Product], crs: pyproj.CRS,
                  datetime: str | None = None) -> Path:
    """Write ``out_dir/stac/catalog.json`` listing ``products`` (one item each); returns its path.

    ``datetime`` (ISO 8601) stamps the items; without it they carry the Unix epoch, so catalogs stay
    deterministic. Catalogs or collections that stages keep in ``out_dir/stac-*/`` (e.g. the panoramas') are
    linked as children, so one root reaches every product.
    """
    when = dt.datetime.fromisoformat(datetime.replace("Z", "+00:00")) if datetime else dt.datetime(
        1970, 1, 1, tzinfo=dt.timezone.utc)
    projection = _projection(crs)
    to_wgs84 = pyproj.Transformer.from_crs(crs_mod.horizontal_part(crs), "EPSG:4326", always_xy=True)
    stac_io = pystac.StacIO.default()
    links = [pystac.Link(pystac.RelType.ROOT, f"./{CATALOG_FILE}", media_type=pystac.MediaType.JSON)]
    target = out_dir / CATALOG_DIR
    with atomic_dir(target) as tmp:
        for product in sorted(products, key=lambda p: p.path):  # streamed: each item written, then dropped
            item = _item(product, to_wgs84, projection, when)
            (tmp / item.id).mkdir()
            _save(stac_io, item.to_dict(include_self_link=False, transform_hrefs=False),
                  tmp / item.id / f"{item.id}.json")
            links.append(pystac.Link(pystac.RelType.ITEM, f"./{item.id}/{item.id}.json",
                                     media_type=pystac.MediaType.GEOJSON))
        links += [pystac.Link(pystac.RelType.CHILD, f"../{child.relative_to(out_dir).as_posix()}",
                              media_type=pystac.MediaType.JSON, title=child.parent.name)
                  for child in _stage_catalogs(out_dir)]
        catalog = pystac.Catalog(id=name, description=f"Products of the cim job '{name}'")
        catalog.links = links
        _save(stac_io, catalog.to_dict(include_self_link=False, transform_hrefs=False), tmp / CATALOG_FILE)
    return target / CATALOG_FILE


def _save(stac_io: pystac.StacIO, document: dict[str, Any], path: Path) -> None:
    """One STAC document as pystac writes it (its JSON encoder), with relative links given as they are."""
    path.write_text(stac_io.json_dumps(document), encoding="utf-8")


def _stage_catalogs(out_dir: Path) -> list[Path]:
    """Root files of the STAC catalogs/collections stages wrote beside the job's own (``stac-*/``)."""
    roots = (folder / name for folder in sorted(out_dir.glob(f"{CATALOG_DIR}-*")) if folder.is_dir()
             for name in ("collection.json", "catalog.json"))
    return [root for root in roots if root.is_file()]
