"""`cim view`'s own page in headless Chromium on the demo data (Delft AHN3, east block, and its BGT footprints,
EPSG:7415 through the NAP geoid): points, LoD1 buildings and terrain; each layer changes the picture, a click on a
building shows that building's attributes, no console error."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio

import cim.crs
from cim.buildings.footprints import read_footprints
from test_viewer_helpers import chromium, open_view, toggle_layers

JOB_CRS = "EPSG:7415"


@pytest.fixture(scope="module")
def twin(repo_data, tmp_path_factory) -> Path:
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    chromium()
    out = tmp_path_factory.mktemp("demo") / "out"
    doc = {"job": {"name": "demo-view", "output": str(out), "crs": JOB_CRS},
           "stages": [{"type": "read.las", "files": [str(repo_data / "delft" / "ahn3_cropped_2.laz")]},
                      {"type": "tile", "size": 100.0, "buffer": 10.0},
                      {"type": "classify.ground", "mode": "auto"},
                      {"type": "raster.dtm", "resolution": 1.0},
                      {"type": "buildings.lod1", "footprints": str(repo_data / "delft" / "bgt_pand.sqlite")},
                      {"type": "tiles.buildings", "tile_size": 100.0},
                      {"type": "tiles.pointcloud"},
                      {"type": "tiles.terrain", "step": 1}]}
    result = run_job(parse_job(doc, out / "job.toml"), scheduler="threads", workers=2)
    assert result.report.ok, [o.error for o in result.report.outcomes.values() if o.status == "failed"]
    return out


@pytest.fixture(scope="module")
def page(twin, tmp_path_factory):
    with open_view(twin, tmp_path_factory.mktemp("chromium")) as page:
        yield page


def test_each_layer_changes_the_picture(page) -> None:
    assert page.summary == {"tilesets": 3, "markers": 0}
    changes = toggle_layers(page)
    print(changes)
    assert len(changes) == 3
    for layer, changed in changes.items():
        assert changed > 200, (layer, changed)


def test_a_click_on_a_building_shows_its_attributes(page, twin, repo_data) -> None:
    """Look straight down on the largest footprint (no other building can stand in front of it then) and aim at
    its middle, 2 m above the DTM: the ray meets its roof first."""
    crs = cim.crs.resolve(JOB_CRS)
    with rasterio.open(twin / "dtm.vrt") as src:
        left, bottom, right, top = src.bounds
        footprints = [f for f in read_footprints(repo_data / "delft" / "bgt_pand.sqlite", crs)
                      if left < f.representative_point[0] < right and bottom < f.representative_point[1] < top]
        target = max(footprints, key=lambda f: f.polygon.area)
        x, y = target.representative_point
        z = float(next(src.sample([(x, y)]))[0]) + 2.0
    lon, lat, h = cim.crs.to_geographic3d(crs).transform(x, y, z)
    page.eval(f"cim.viewer.camera.setView({{destination: Cesium.Cartesian3.fromDegrees({lon}, {lat}, {h + 250})}}); "
              "cim.viewer.scene.requestRender()")  # setView looks straight down by default
    page.settle()
    page.click(*page.eval(f"""(() => {{ const p = Cesium.SceneTransforms.worldToWindowCoordinates(
        cim.viewer.scene, Cesium.Cartesian3.fromDegrees({lon}, {lat}, {h})); return [p.x, p.y]; }})()"""))
    selected = page.eval("cim.selected")
    assert selected is not None and selected["id"] == target.id
    assert selected["footprint_area"] == pytest.approx(target.polygon.area, rel=1e-6)
    shown = page.eval("document.getElementById('info').textContent")
    assert target.id in shown and "h_lod12" in shown


def test_no_console_errors(page) -> None:
    assert page.errors == []


def test_terrain_tiles_are_in_the_stac_catalog(twin, repo_data) -> None:
    import json

    import laspy
    import pyproj

    catalog = json.loads((twin / "stac" / "catalog.json").read_text())
    link = next(ln["href"] for ln in catalog["links"] if "3dtiles-terrain" in ln["href"])
    item = json.loads((twin / "stac" / link).resolve().read_text())
    asset = item["assets"]["data"]
    assert asset["type"] == "application/json" and asset["roles"] == ["data", "terrain"]
    target = (twin / "stac" / link).parent.joinpath(asset["href"]).resolve()
    assert target == twin / "3dtiles-terrain" / "tileset.json"
    with laspy.open(repo_data / "delft" / "ahn3_cropped_2.laz") as las:  # the points' block, in WGS 84
        lo, hi = las.header.mins, las.header.maxs
    lon0, lat0, lon1, lat1 = pyproj.Transformer.from_crs(28992, 4326, always_xy=True).transform_bounds(
        lo[0], lo[1], hi[0], hi[1])
    w, s, e, n = item["bbox"]
    assert w <= lon0 + 2e-5 and s <= lat0 + 2e-5 and e >= lon1 - 2e-5 and n >= lat1 - 2e-5  # DTM cells: 1 m
    assert lon0 - w < 0.002 and lat0 - s < 0.002 and e - lon1 < 0.002 and n - lat1 < 0.002  # < 1 tile more
