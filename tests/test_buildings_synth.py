"""Accuracy on the synthetic city (true LoD2.2 CityJSON + roof types), tile-cut independence and the products of
the building stages (CityJSON 2.0 schema + cjio, 3D Tiles 1.1 schema + Khronos gltf-validator)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import shapely

import cim.io.las as las
from cim.buildings.evaluate import covered_truths, footprint_of, iou, roof_height_at, roof_rmse
from cim.buildings.footprints import read_footprints
from cim.buildings.mesh import point_distances, rms
from cim.buildings.run import models_from_cityjson, reconstruct_cloud, summarise
from cim.buildings.validity import check_solid
from cim.cityjson import read_cityjson
from test_buildings_cityjson import schema_errors
from test_buildings_delft import open3d_view
from test_tiles_helpers import require_gltf_validator, validate_glbs
from test_tiles_helpers import schema_errors as tiles_schema_errors


@pytest.fixture(scope="module")
def city(synth_city):
    cloud = las.read(synth_city.als_laz)
    truth = read_cityjson(synth_city.buildings_cityjson)
    return synth_city, cloud, truth, [footprint_of(t) for t in truth]


@pytest.fixture(scope="module")
def with_footprints(city):
    """The given footprints and the models reconstructed in them (read only by the tests)."""
    synth, cloud, _, _ = city
    fps = read_footprints(synth.footprints_gpkg, cloud.crs)
    return fps, reconstruct_cloud(cloud, fps)


def _lod1_truth(truth, percentile: float = 70.0) -> float:
    """The LoD1.2 definition applied to the exact roof: the percentile of the true roof surface heights."""
    fp = footprint_of(truth)
    minx, miny, maxx, maxy = fp.bounds
    gx, gy = np.meshgrid(np.arange(minx, maxx, 0.2), np.arange(miny, maxy, 0.2))
    z = roof_height_at(truth, gx.ravel(), gy.ravel())
    return float(np.percentile(z[np.isfinite(z)], percentile))


def test_accuracy_with_footprints(city, with_footprints):
    _, _, truth, _ = city
    fps, models = with_footprints
    assert len(models) == len(truth) == len(fps)
    by_id = {t.id: t for t in truth}
    roof_ok, lod1_err, rmse, valid = [], [], [], []
    for m in models:
        t = by_id[m.id]
        roof_ok.append(m.attributes["roof_type"] == int(t.attributes["roofType"]))
        lod1_err.append(abs(m.attributes["h_lod12"] - _lod1_truth(t)))
        rmse.append(roof_rmse(m.lod22, t))
        valid += [check_solid(m.lod22).valid, check_solid(m.lod12).valid]
        assert m.status == "lod22"
        assert abs(m.attributes["h_ground"] - t.attributes["cim_ground_height"]) < 0.3
    print(f"synthetic city, {len(models)} buildings: roof type accuracy {np.mean(roof_ok):.3f}, LoD1 median "
          f"error {np.median(lod1_err):.3f} m, LoD2 roof RMSE median {np.median(rmse):.3f} max {np.max(rmse):.3f} m")
    assert np.mean(roof_ok) >= 0.95
    assert np.median(lod1_err) <= 0.2
    assert np.max(rmse) <= 0.15
    assert np.mean(valid) >= 0.995
    views = [open3d_view(g.faces) for m in models for g in (m.lod12, m.lod22)]
    assert all(v["closed"] and v["consistent"] and v["outward"] >= 0.9 for v in views)


def test_point_to_model_rmse_per_roof_type(city, with_footprints):
    """3D point-to-model RMSE of every building against the same measure for its true solid (the floor set by
    the 2 cm range noise and by neighbours' wall points inside the footprint), per roof type."""
    _, cloud, truth, _ = city
    _, models = with_footprints
    by_id = {t.id: t for t in truth}
    points = cloud.xyz[cloud["classification"] == 6]
    excess: dict[int, list[float]] = {}
    for m in models:
        inside = points[shapely.contains_xy(m.footprint, points[:, 0], points[:, 1])]
        floor = rms(point_distances(by_id[m.id].faces, inside))
        excess.setdefault(m.attributes["roof_type"], []).append(m.attributes["rmse_lod22"] - floor)
    rmse = summarise(models)["rmse_lod22_by_roof_type"]
    print("synthetic city point-to-model RMSE per roof type:", json.dumps(rmse), "excess over the true solid:",
          {k: round(max(v), 4) for k, v in excess.items()})
    assert np.median([m.attributes["rmse_lod22"] for m in models]) <= 0.05  # ≈ the range noise
    assert all(max(v) <= 0.03 for v in excess.values())  # what the models add to the true solids' RMSE
    # every roof type of the truth is present
    assert {int(t.attributes["roofType"]) for t in truth} >= {1000, 2100, 3100, 3200, 3300}


def test_derived_footprints(city):
    _, cloud, truth, truth_fp = city
    models = reconstruct_cloud(cloud, None)
    covered: set[int] = set()
    ious = []
    for m in models:
        js = covered_truths(m.footprint, truth_fp)
        assert js, f"derived footprint {m.id} matches no building"
        covered.update(js)
        ious.append(iou(m.footprint, shapely.union_all([truth_fp[j] for j in js])))
        assert check_solid(m.lod22).valid
    print(f"derived footprints: {len(models)} outlines for {len(truth)} buildings (terraces merge), IoU mean "
          f"{np.mean(ious):.3f} min {np.min(ious):.3f}")
    assert covered == set(range(len(truth)))
    assert np.mean(ious) >= 0.95
    assert np.min(ious) >= 0.9


def _run_job(synth, out: Path, tile: float, buffer: float) -> Path:
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    doc = {"job": {"name": "b", "output": str(out)},
           "stages": [{"type": "read.las", "files": [str(synth.als_laz)]},
                      {"type": "tile", "size": tile, "buffer": buffer},
                      {"type": "buildings.lod2", "footprints": str(synth.footprints_gpkg)},
                      {"type": "write.cityjson"},
                      {"type": "tiles.buildings", "tile_size": 100.0}]}
    result = run_job(parse_job(doc, out / "job.toml"), scheduler="threads", workers=1)
    assert result.report.ok
    return out


def test_stages_model_each_building_once_whatever_the_tile_cut(city, tmp_path):
    synth, _, truth, _ = city
    small = _run_job(synth, tmp_path / "small", 40.0, 30.0)  # buildings cross many tile edges
    big = _run_job(synth, tmp_path / "big", 400.0, 30.0)
    a = {m.id: m for m in models_from_cityjson(small / "buildings.city.json")}
    b = {m.id: m for m in models_from_cityjson(big / "buildings.city.json")}
    assert sorted(a) == sorted(b) == sorted(t.id for t in truth)
    for k in a:
        for name in ("h_lod12", "h_ground", "roof_type", "rmse_lod22", "point_count", "h_ridge"):
            assert a[k].attributes[name] == b[k].attributes[name], (k, name)
    report = json.loads((small / "buildings" / "report.json").read_text())
    assert report["buildings"] == len(truth) and report["valid_lod22"] == len(truth)


def test_products_validate(city, tmp_path):
    synth, _, truth, _ = city
    out = _run_job(synth, tmp_path / "p", 100.0, 40.0)
    doc = json.loads((out / "buildings.city.json").read_text())
    assert schema_errors(doc) == []
    assert doc["metadata"]["referenceSystem"].endswith("/EPSG/0/25832")
    assert doc["metadata"]["+verticalReferenceSystem"].endswith("/EPSG/0/7837")
    lods = {g["lod"] for o in doc["CityObjects"].values() for g in o["geometry"]}
    assert lods == {"1.2", "2.2"}
    lines = (out / "buildings.city.jsonl").read_text().splitlines()
    assert len(lines) == len(truth) + 1
    assert all(schema_errors(json.loads(line), "cityjsonfeature.schema.json") == [] for line in lines[1:])
    cjio = shutil.which("cjio") or str(Path(".venv/bin/cjio").resolve())
    if Path(cjio).exists():
        res = subprocess.run([cjio, str(out / "buildings.city.json"), "info"], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
    tileset = json.loads((out / "3dtiles-buildings" / "tileset.json").read_text())
    assert tiles_schema_errors(tileset, "tileset.schema.json") == []
    glbs = sorted((out / "3dtiles-buildings" / "tiles").glob("*.glb"))
    assert glbs
    require_gltf_validator()
    for report in validate_glbs(glbs):
        assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["messages"][:5]


def test_ground_heights_from_a_dtm(city):
    from cim.terrain.raster import read_raster

    synth, cloud, truth, _ = city
    fps = read_footprints(synth.footprints_gpkg, cloud.crs)
    models = reconstruct_cloud(cloud, fps, dtm=read_raster(synth.dtm_tif))
    by_id = {t.id: t for t in truth}
    err = [abs(m.attributes["h_ground"] - by_id[m.id].attributes["cim_ground_height"]) for m in models]
    assert all(m.attributes["ground_source"] == "dtm" for m in models)
    assert np.median(err) < 0.2 and np.max(err) < 0.5


def test_unclassified_points_ground_classified_and_trees_dropped(city):
    """No classification at all: SMRF ground (cim.terrain), candidates by height, outlines derived, trees out."""
    _, cloud, truth, truth_fp = city
    bare = cloud.copy()
    bare.drop("classification")
    models = reconstruct_cloud(bare, None)
    covered: set[int] = set()
    for m in models:
        js = covered_truths(m.footprint, truth_fp)
        assert js, f"{m.id} is not a building"  # street trees must not become buildings
        covered.update(js)
    assert covered == set(range(len(truth)))
