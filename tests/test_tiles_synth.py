"""tiles.pointcloud on the synthetic Kaiserslautern city (ALS + MLS with RGB): placement against ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cim
from cim.io import las
from cim.tiles3d.check import check_tileset
from cim.tiles3d.placement import ecef_to_geodetic


@pytest.fixture(scope="module")
def synth_tiles(synth_city, tmp_path_factory):
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    root = tmp_path_factory.mktemp("synth_tiles")
    document = {
        "job": {"name": "synth"},
        "stages": [
            {"type": "read.las", "files": [str(synth_city.als_laz), str(synth_city.mls_laz)]},
            {"type": "tile", "size": 100.0, "buffer": 0.0},
            {"type": "tiles.pointcloud", "leaf_points": 20_000, "extra": ["point_source_id"]},
        ],
    }
    job = parse_job(document, root / "job.toml", {"output": str(root / "out")})
    run = run_job(job, scheduler="threads", workers=2)
    assert run.report.ok
    return root / "out" / "3dtiles" / "pointcloud" / "tileset.json"


def test_synth_city_tiles_are_complete_and_consistent(synth_tiles, synth_city):
    als = las.read(synth_city.als_laz)
    mls = las.read(synth_city.mls_laz)
    report = check_tileset(synth_tiles, keep_values=True)
    assert report.ok, report.problems[:5]
    assert report.points == len(als) + len(mls)
    assert report.sums["point_source_id"] == float(als["point_source_id"].sum()) + float(mls["point_source_id"].sum())
    intensity = als["intensity"].astype(np.int64).sum() + mls["intensity"].astype(np.int64).sum()
    assert report.sums["intensity"] == float(intensity)
    doc = json.loads(synth_tiles.read_text())
    assert doc["metadata"]["properties"]["sourceCrs"].startswith("EPSG:25832+7837")


def test_synth_ground_lands_on_true_terrain_at_true_ellipsoidal_height(synth_tiles, synth_city):
    """Decoded ECEF ground points, taken back to DHHN2016, sit on the scene's true terrain; and their
    ellipsoidal heights are the true terrain height plus the GCG2016 quasigeoid (~48.7 m), not the raw height."""
    report = check_tileset(synth_tiles, keep_values=True, keep_ecef=True)
    cls = np.concatenate(report.values["classification"]).round().astype(int)
    ecef = np.concatenate(report.ecef)[cls == 2]
    llh = ecef_to_geodetic(ecef)
    crs = cim.crs.resolve("EPSG:25832+7837")
    x, y, z = cim.crs.to_geographic3d(crs).transform(llh[:, 0], llh[:, 1], llh[:, 2], direction="INVERSE")
    tiled_error = np.median(np.abs(z - synth_city.scene.terrain_height(x, y)))
    clouds = [las.read(p) for p in (synth_city.als_laz, synth_city.mls_laz)]
    gx, gy, gz = (np.concatenate([c[d][c["classification"] == 2] for c in clouds]) for d in ("x", "y", "z"))
    input_error = np.median(np.abs(gz - synth_city.scene.terrain_height(gx, gy)))
    assert len(gz) == len(z)
    print(f"median abs(z - true terrain): tiled {tiled_error:.5f} m, input {input_error:.5f} m")
    assert abs(tiled_error - input_error) < 0.001  # the same points, within 16-bit quantization
    # the geoid separation is applied: ellipsoidal minus DHHN2016 height is GCG2016's ~48.7 m at Kaiserslautern
    separation = llh[:, 2] - z
    print(f"geoid separation {separation.min():.3f}..{separation.max():.3f} m")
    assert np.all(np.abs(separation - 48.7) < 0.3)
