"""`cim view`'s own page in headless Chromium on the synthetic city: points, buildings, terrain and panorama
markers; each layer changes the picture, a marker click opens the panorama looking along its heading, the
measuring tool reads the terrain's heights, no console error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from scipy.interpolate import RegularGridInterpolator

import cim.crs
from test_viewer_helpers import changed_pixels, chromium, open_view, toggle_layers

JOB_CRS = "EPSG:25832+7837"


@pytest.fixture(scope="module")
def twin(synth_city, tmp_path_factory) -> Path:
    """The synthetic city through the pipeline (points, DTM, LoD1, three tilesets) and `cim panoramas`."""
    from cim.cli.jobs import panoramas_job
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    chromium()
    out = tmp_path_factory.mktemp("twin") / "out"
    doc = {"job": {"name": "twin", "output": str(out), "crs": JOB_CRS},
           "stages": [{"type": "read.las", "files": [str(synth_city.als_laz)]},
                      {"type": "tile", "size": 100.0, "buffer": 10.0},
                      {"type": "raster.dtm", "resolution": 1.0},
                      {"type": "buildings.lod1", "footprints": str(synth_city.footprints_gpkg)},
                      {"type": "tiles.buildings", "tile_size": 100.0},
                      {"type": "tiles.pointcloud"},
                      {"type": "tiles.terrain", "step": 1}]}
    result = run_job(parse_job(doc, out / "job.toml"), scheduler="threads", workers=2)
    assert result.report.ok, [o.error for o in result.report.outcomes.values() if o.status == "failed"]
    drive = panoramas_job(synth_city.poses_csv, synth_city.panorama_dir, out / "drive", crs=JOB_CRS)
    result = run_job(parse_job(drive, out / "drive.toml"), scheduler="threads", workers=2)
    assert result.report.ok, [o.error for o in result.report.outcomes.values() if o.status == "failed"]
    return out


@pytest.fixture(scope="module")
def page(twin, tmp_path_factory):
    with open_view(twin, tmp_path_factory.mktemp("chromium")) as page:
        yield page


def test_page_lists_three_tilesets_and_the_panoramas(page, twin) -> None:
    index = json.loads((twin / "drive" / "panoramas.json").read_text())["panoramas"]
    assert page.summary == {"tilesets": 3, "markers": len(index)}
    layers = page.eval("Object.keys(cim.layers)")
    assert sorted(layers) == ["3dtiles-buildings/tileset.json", "3dtiles-terrain/tileset.json",
                      "3dtiles/pointcloud/tileset.json", "panoramas"]


def test_each_layer_changes_the_picture(page) -> None:
    changes = toggle_layers(page)
    print(changes)
    for layer, changed in changes.items():
        assert changed > 200, (layer, changed)


def test_a_click_on_the_terrain_measures_the_dtm(page, twin) -> None:
    """Two clicks in measuring mode: the picked heights are the DTM's there, the distances the points'."""
    for layer in ("3dtiles-buildings/tileset.json", "3dtiles/pointcloud/tileset.json", "panoramas"):
        page.eval(f"cim.layers['{layer}'].show = false")
    page.settle()
    to_llh = pyproj.Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
    to_job = cim.crs.to_geographic3d(cim.crs.resolve(JOB_CRS))
    with rasterio.open(twin / "dtm.vrt") as src:  # aim at two ground spots a third and two thirds across the DTM
        left, bottom, right, top = src.bounds
        aims = [(left + f * (right - left), bottom + g * (top - bottom)) for f, g in ((0.3, 0.35), (0.7, 0.6))]
        aims = [(x, y, float(next(src.sample([(x, y)]))[0])) for x, y in aims]
    page.eval("document.getElementById('measure').click()")
    for x, y, z in aims:
        lon, lat, h = to_job.transform(x, y, z)
        page.click(*page.eval(f"""(() => {{ const p = Cesium.SceneTransforms.worldToWindowCoordinates(
            cim.viewer.scene, Cesium.Cartesian3.fromDegrees({lon}, {lat}, {h})); return [p.x, p.y]; }})()"""))
    m = page.eval("cim.measurement")
    text = page.eval("document.getElementById('measurement').textContent")
    page.eval("document.getElementById('measure').click()")
    for layer in ("3dtiles-buildings/tileset.json", "3dtiles/pointcloud/tileset.json", "panoramas"):
        page.eval(f"cim.layers['{layer}'].show = true")
    assert m is not None, "no terrain under the clicks"
    a, b = np.array(m["a"]), np.array(m["b"])
    assert math.isclose(m["distance"], float(np.linalg.norm(b - a)), rel_tol=1e-9)
    assert f"distance {m['distance']:.2f} m" in text and f"height Δ {m['height']:.2f} m" in text
    with rasterio.open(twin / "dtm.vrt") as src:  # the mesh between cell centres: linear in the DTM
        dtm = src.read(1, masked=True).filled(np.nan)
        cols = src.transform.c + (np.arange(src.width) + 0.5) * src.transform.a
        rows = src.transform.f + (np.arange(src.height) + 0.5) * src.transform.e
    surface = RegularGridInterpolator((rows[::-1], cols), dtm[::-1])
    heights = []
    for p, aim in zip((a, b), aims):
        lon, lat, h = to_llh.transform(*p)
        x, y, z = to_job.transform(lon, lat, h, direction="INVERSE")
        assert math.hypot(x - aim[0], y - aim[1]) < 2.0  # where the click aimed (a pixel is ~0.5 m there)
        heights.append((z, float(surface([y, x])[0])))
    print("picked vs DTM heights", heights)
    for picked, ground in heights:
        assert abs(picked - ground) < 0.25, heights  # depth-buffer picking ~200 m away (0.1 m seen)
    assert abs(m["height"] - (heights[1][0] - heights[0][0])) < 0.05


def test_a_marker_click_opens_the_panorama_along_its_heading(page, synth_city) -> None:
    marker = page.eval("cim.markers[0]")
    xy = page.eval(f"""(() => {{ const p = Cesium.SceneTransforms.worldToWindowCoordinates(cim.viewer.scene,
        Cesium.Cartesian3.fromDegrees({marker['lon']}, {marker['lat']}, {marker['height']}));
        return [p.x, p.y]; }})()""")
    before = page.settle()
    page.click(*xy)
    assert page.eval("cim.panorama && cim.panorama.name") == marker["name"]
    assert page.eval("document.getElementById('pano').hidden") is False
    assert abs(page.eval("cim.panorama.view.yaw()") - marker["yaw"]) < 1e-6
    # the simulator's true grid heading of that panorama (the tiles are north-up: yaw 0 is grid north)
    truth = json.loads(synth_city.truth_json.read_text())["panoramas"]["images"]
    heading = next(t["heading_grid"] for t in truth if t["name"] == marker["name"])
    assert abs((marker["yaw"] - math.radians(heading) + math.pi) % (2 * math.pi) - math.pi) < math.radians(0.5)
    page.eval("new Promise((r) => setTimeout(r, 1500))")  # the tiles arrive
    shown = page.screenshot()
    h, w = shown.shape[:2]
    inner = (slice(h // 5, h * 4 // 5), slice(w // 10, w * 9 // 10))  # inside the panorama's frame (5 % inset)
    box = shown[inner]
    assert changed_pixels(before[inner], box) > 0.5 * box.shape[0] * box.shape[1]
    assert box.std() > 10  # an image, not a blank
    page.eval("document.getElementById('pano-close').click()")
    assert page.eval("cim.panorama") is None


def test_no_console_errors(page) -> None:
    assert page.errors == []
