"""Real data: Delft AHN3 (classes 2 ground, 6 building) with its 160 BGT footprints, and the ``cim buildings``
command end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import cim.io.las as las
from cim.buildings.footprints import read_footprints
from cim.buildings.run import reconstruct_cloud, summarise
from cim.buildings.validity import check_solid
from cim.points import PointCloud
from test_buildings_cityjson import schema_errors
from test_tiles_helpers import require_gltf_validator, validate_glbs

DELFT_CRS = "EPSG:7415"


def _cim(args: list[str]) -> subprocess.CompletedProcess:
    """Run the real ``cim`` entry point (error handling and exit codes included)."""
    return subprocess.run([sys.executable, "-m", "cim.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def delft(repo_data):
    cloud = PointCloud.concat([las.read(repo_data / "delft" / f"ahn3_cropped_{i}.laz", crs=DELFT_CRS)
                               for i in (1, 2)])
    fps = read_footprints(repo_data / "delft" / "bgt_pand.sqlite", DELFT_CRS)
    return cloud, fps, reconstruct_cloud(cloud, fps)


def test_every_footprint_gets_a_valid_model(delft):
    _, fps, models = delft
    assert [m.id for m in models] == [f.id for f in fps]
    summary = summarise(models)
    print("Delft:", json.dumps(summary))
    assert summary["with_model"] == 160
    assert summary["lod12"] == 160  # every footprint holds points: an LoD1.2 block each
    solids = [g for m in models for g in (m.lod12, m.lod22) if g is not None]
    valid = np.mean([check_solid(g).valid for g in solids])
    assert valid >= 0.995
    assert summary["lod22"] >= 150  # the rest keep LoD1.2 and say why
    for m in models:
        assert m.status in ("lod22", "lod12_only:invalid_lod22", "lod12_only:no_planes",
                            "lod12_only:too_few_points")
        if m.lod22 is None:
            assert m.lod12 is not None and m.status.startswith("lod12_only")


def test_delft_heights_are_plausible(delft):
    _, _, models = delft
    ground = np.array([m.attributes["h_ground"] for m in models])
    assert np.all((ground > -2.0) & (ground < 2.0))  # NAP heights of a Delft street block
    h = np.array([m.attributes["h_lod12"] - m.attributes["h_ground"] for m in models])
    assert np.median(h) > 5 and np.all(h > 0)
    rmse = summarise(models)["rmse_lod22_by_roof_type"]
    print("Delft point-to-model RMSE (vertical, all building points) per roof type:", json.dumps(rmse))
    assert all(np.isfinite(v["median"]) for v in rmse.values())
    assert rmse["1000"]["median"] < 0.6 and rmse["3100"]["median"] < 0.6


def test_cli_buildings_end_to_end(repo_data, tmp_path):
    out = tmp_path / "b"
    res = _cim(["buildings", str(repo_data / "delft" / "ahn3_cropped_2.laz"), "--crs", DELFT_CRS,
                                   "--footprints", str(repo_data / "delft" / "bgt_pand.sqlite"), "--out", str(out),
                                   "--tile-size", "100", "--buffer", "30", "--workers", "1", "--scheduler",
                                   "threads"])
    assert res.returncode == 0, (res.stdout + res.stderr)
    doc = json.loads((out / "buildings.city.json").read_text())
    assert schema_errors(doc) == []
    assert doc["metadata"]["referenceSystem"] == "https://www.opengis.net/def/crs/EPSG/0/7415"
    assert len(doc["CityObjects"]) >= 20
    glbs = sorted((out / "3dtiles-buildings" / "tiles").glob("*.glb"))
    assert glbs and (out / "3dtiles-buildings" / "tileset.json").exists()
    # a second run resumes: nothing is redone
    res2 = _cim(["buildings", str(repo_data / "delft" / "ahn3_cropped_2.laz"), "--crs", DELFT_CRS,
                                    "--footprints", str(repo_data / "delft" / "bgt_pand.sqlite"), "--out", str(out),
                                    "--tile-size", "100", "--buffer", "30", "--workers", "1", "--scheduler",
                                    "threads"])
    assert res2.returncode == 0, (res2.stdout + res2.stderr)
    require_gltf_validator()
    for report in validate_glbs(glbs):
        assert report["numErrors"] == 0, report["messages"][:5]


def test_cli_without_footprints_derives_them(repo_data, tmp_path):
    out = tmp_path / "d"
    res = _cim(["buildings", str(repo_data / "delft" / "ahn3_cropped_2.laz"), "--crs", DELFT_CRS,
                                   "--out", str(out), "--tile-size", "100", "--buffer", "40", "--no-tiles",
                                   "--workers", "1", "--scheduler", "threads"])
    assert res.returncode == 0, (res.stdout + res.stderr)
    doc = json.loads((out / "buildings.city.json").read_text())
    assert schema_errors(doc) == []
    assert len(doc["CityObjects"]) >= 3
    assert all(o["attributes"]["src_source"] == "derived" for o in doc["CityObjects"].values())


def test_cli_bad_footprints_file_is_a_clean_error(repo_data, tmp_path):
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    res = _cim(["buildings", str(repo_data / "delft" / "ahn3_cropped_2.laz"), "--crs", DELFT_CRS,
                                   "--footprints", str(bad), "--out", str(tmp_path / "x"), "--workers", "1",
                                   "--scheduler", "threads"])
    assert res.returncode != 0
    assert "bad.gpkg" in (res.stdout + res.stderr)


def test_cli_classifies_unlabelled_points(repo_data, tmp_path):
    """The whole chain: no classes in the input -> SMRF ground + object classes, DTM, LoD1.2/LoD2.2, CityJSON."""
    cloud = las.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs=DELFT_CRS)
    cloud.drop("classification")
    src = tmp_path / "bare.laz"
    las.write(src, cloud)
    out = tmp_path / "u"
    res = _cim(["buildings", str(src), "--footprints", str(repo_data / "delft" / "bgt_pand.sqlite"), "--out",
                str(out), "--tile-size", "100", "--buffer", "30", "--no-tiles", "--workers", "1", "--scheduler",
                "threads"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "classified: ground (SMRF) objects" in res.stdout
    assert (out / "dtm.vrt").exists()
    report = json.loads((out / "buildings" / "report.json").read_text())
    assert report["buildings"] >= 20 and report["lod22"] >= 0.8 * report["buildings"]
