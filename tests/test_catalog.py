"""The job's STAC catalog links the catalogs stages keep beside it (stac-*/), so one root reaches everything."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyproj
import pystac
from pystac.validation import validate_dict

from cim.catalog import write_catalog
from cim.pipeline.stage import Product

WHEN = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)


def test_stage_collections_become_children_of_the_job_catalog(tmp_path: Path) -> None:
    collection = pystac.Collection("panoramas", "drive", pystac.Extent(
        pystac.SpatialExtent([[7.7, 49.4, 7.8, 49.5]]), pystac.TemporalExtent([[WHEN, None]])))
    collection.add_item(pystac.Item("pano-1", None, None, WHEN, {}))
    collection.normalize_hrefs(str(tmp_path / "stac-panoramas"))
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    (tmp_path / "stac-empty").mkdir()  # a folder without a catalog is not linked
    product = Product(path="las/0_0.laz", kind="pointcloud", media_type="application/vnd.laszip",
                      properties={"bounds": [410000.0, 5479000.0, 230.0, 410250.0, 5479250.0, 260.0]})
    path = write_catalog(tmp_path, "job", [product], pyproj.CRS("EPSG:25832"))
    catalog = pystac.Catalog.from_file(str(path))
    assert [child.id for child in catalog.get_children()] == ["panoramas"]
    assert sorted(item.id for item in catalog.get_items(recursive=True)) == ["las__0_0.laz", "pano-1"]


def test_items_carry_the_projection_looked_up_once(tmp_path: Path, monkeypatch) -> None:
    """A compound CRS has no EPSG code: every item gets its WKT2; the EPSG search (slow) runs once per catalog."""
    crs = pyproj.CRS("EPSG:25832+7837")
    wkt = crs.to_wkt()
    calls = []
    original = pyproj.CRS.to_epsg
    monkeypatch.setattr(pyproj.CRS, "to_epsg", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    products = [Product(f"dtm/{i}_0.tif", "raster", "image/tiff", properties={"raster:kind": "dtm"})
                for i in range(30)]
    catalog = pystac.Catalog.from_file(str(write_catalog(tmp_path, "job", products, crs)))
    items = list(catalog.get_items())
    assert len(items) == 30 and len(calls) == 1
    assert all(i.properties["proj:code"] is None and i.properties["proj:wkt2"] == wkt for i in items)
    utm = pystac.Catalog.from_file(str(write_catalog(tmp_path / "utm", "job", products[:2], pyproj.CRS("EPSG:25832"))))
    assert {i.properties["proj:code"] for i in utm.get_items()} == {"EPSG:25832"}


def test_a_catalog_of_many_products_links_every_item_with_its_footprint(tmp_path: Path, monkeypatch) -> None:
    """Hundreds of items: each one linked once, its WGS84 bbox the corners' transform, the core STAC schemas
    met, the transformer built once per catalog, and a re-run byte-identical."""
    crs = pyproj.CRS("EPSG:25832+7837")
    built = []
    original = pyproj.Transformer.from_crs
    monkeypatch.setattr(pyproj.Transformer, "from_crs", lambda *a, **k: built.append(1) or original(*a, **k))
    products = []
    for i in range(300):
        x, y = 410000.0 + 250 * (i % 20), 5479000.0 + 250 * (i // 20)
        if i % 3:
            products.append(Product(f"las/{i}.laz", "pointcloud", "application/vnd.laszip", properties={
                "pc:count": 10 + i, "pc:schemas": [{"name": "Z", "size": 4, "type": "signed"}],
                "bounds": [x, y, 230.0, x + 250.0, y + 250.0, 260.0]}))
        else:
            products.append(Product(f"dtm/{i}.tif", "raster", "image/tiff", properties={"raster:kind": "dtm"}))
    path = write_catalog(tmp_path / "a", "job", products, crs, "2024-05-01T00:00:00Z")
    assert len(built) == 1
    again = write_catalog(tmp_path / "b", "job", products[::-1], crs, "2024-05-01T00:00:00Z")
    files = sorted(p.relative_to(path.parent) for p in path.parent.rglob("*.json"))
    assert len(files) == 301 and files == sorted(p.relative_to(again.parent) for p in again.parent.rglob("*.json"))
    assert all((path.parent / f).read_bytes() == (again.parent / f).read_bytes() for f in files)

    catalog = pystac.Catalog.from_file(str(path))
    catalog.validate()  # the core schemas ship with pystac
    items = {item.id: item for item in catalog.get_items()}
    assert sorted(items) == sorted(p.path.replace("/", "__") for p in products)
    to_wgs84 = original(pyproj.CRS("EPSG:25832"), "EPSG:4326", always_xy=True)
    for n, product in enumerate(products):
        item = items[product.path.replace("/", "__")]
        if n % 50 == 0:  # the core schema (the extensions' need the network); jsonschema takes ~50 ms an item
            validate_dict(item.to_dict(), extensions=[])
        assert item.properties["datetime"] == "2024-05-01T00:00:00Z"
        assert Path(item.assets["data"].get_absolute_href()) == tmp_path / "a" / product.path
        assert item.get_root().id == item.get_parent().id == "job"
        if "bounds" not in product.properties:
            assert item.bbox is None and item.geometry is None
            continue
        x0, y0, _, x1, y1, _ = product.properties["bounds"]
        lon, lat = to_wgs84.transform([x0, x1, x0, x1], [y0, y0, y1, y1])
        assert item.bbox == [round(v, 8) for v in (min(lon), min(lat), max(lon), max(lat))]
        assert item.properties["pc:count"] == product.properties["pc:count"]
