"""The job's STAC catalog links the catalogs stages keep beside it (stac-*/), so one root reaches everything."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyproj
import pystac

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
