"""The scale benchmark at a toy size: the generated city (density, seams, single file, determinism), its job
files, and one measured run of the tiles job whose figures are checked against the city's own truth."""

from __future__ import annotations

import hashlib
import json

import laspy
import numpy as np
import pyproj
import pytest

from benchmarks.scale.__main__ import main
from benchmarks.scale.city import POINT_DENSITY, CitySpec, make_city
from benchmarks.scale.jobs import JOBS, job_toml
from benchmarks.scale.plan import billion_point_plan
from benchmarks.scale.run import plan, summarise, targets
from cim.buildings.footprints import read_footprints
from cim.pipeline.job import load_job

SPEC = CitySpec(points=100_000, files=2)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_city(SPEC, tmp_path_factory.mktemp("cities"), workers=1)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_city_density_crs_and_seamless_tiles(city):
    facts = city.facts
    assert len(city.files) == 2 and facts["grid"] == [1, 2]
    counts = [laspy.open(f).header.point_count for f in city.files]
    assert facts["points"] == sum(counts)
    area = facts["area_m2"]
    assert area == pytest.approx(2 * SPEC.extent ** 2)
    assert 0.9 * POINT_DENSITY < sum(counts) / area < 1.15 * POINT_DENSITY
    target = pyproj.CRS("EPSG:25832+7837")
    tiles = [laspy.read(f) for f in city.files]
    for las in tiles:
        assert las.header.parse_crs().equals(target)
    west, east = tiles
    edge = SPEC.extent + 410600.0  # the tiles meet at the west tile's east edge
    assert west.x.max() <= edge + 0.5 and abs(east.x.min() - edge) < 0.5
    # the terrain continues across the seam: ground heights within 2 m on either side agree
    ground = [np.asarray(t.z)[(t.classification == 2) & (np.abs(np.asarray(t.x) - edge) < 2.0)] for t in tiles]
    assert min(len(g) for g in ground) > 50
    assert abs(np.median(ground[0]) - np.median(ground[1])) < 0.25


def test_single_file_holds_the_same_points_and_footprints_are_unique(city):
    single = laspy.read(city.single)
    parts = [laspy.read(f) for f in city.files]
    for name in ("x", "y", "z"):
        np.testing.assert_allclose(np.asarray(single[name]), np.concatenate([np.asarray(p[name]) for p in parts]),
                                   atol=1e-6)
    np.testing.assert_array_equal(single.classification, np.concatenate([p.classification for p in parts]))
    footprints = read_footprints(city.footprints, "EPSG:25832+7837")
    assert len(footprints) == city.facts["buildings"] > 0
    assert len({f.id for f in footprints}) == len(footprints)


def test_city_is_deterministic_and_reused(city, tmp_path):
    again = make_city(SPEC, tmp_path, workers=1)
    assert [_digest(f) for f in again.files] == [_digest(f) for f in city.files]
    assert _digest(again.single) == _digest(city.single)
    stamp = again.single.stat().st_mtime_ns
    assert make_city(SPEC, tmp_path).single.stat().st_mtime_ns == stamp  # the recorded city is reused


@pytest.mark.parametrize("job", list(JOBS))
def test_job_files_validate(city, tmp_path, job):
    path = tmp_path / "job.toml"
    path.write_text(job_toml(job, city.files, city.footprints))
    parsed = load_job(path)
    names = [s.name for s in parsed.stages]
    assert names[:2] == ["read.las", "tile"] and names[2:] == [s["type"] for s in JOBS[job]["stages"]]


def test_one_measured_run_matches_the_city(city, tmp_path):
    out = tmp_path / "scale.json"
    main(["--points", str(SPEC.points), "--files", "2", "--workers", "1", "--jobs", "tiles", "--layouts", "files",
          "--repeat", "1", "--no-py3dtiles", "--data", str(city.folder.parent), "--out", str(out)])
    result = json.loads(out.read_text())
    entry = result["configs"]["tiles/files/cim/w1"]
    points = city.facts["points"]
    assert entry["points_processed"] == points and entry["points_match_input"] and entry["product_written"]
    assert len(entry["worker_peak_rss_mb"]) == 1 and entry["worker_peak_rss_mb"][0] > 50  # one worker process
    assert entry["work_bytes"] > 0 and entry["work_files"] > 0 and entry["output_bytes"] > 0 and entry["cpu_s"] > 0
    decode = result["decode_lazrs_parallel"][f"{city.folder.name}/files"]
    assert decode["points"] == points
    assert entry["rate_vs_lazrs_parallel_decode"] == pytest.approx(
        points / entry["wall_s"] / decode["points_per_s"], rel=0.01)
    assert result["machine"]["nproc"] >= 1 and len(result["machine"]["load_average_before"]) == 3
    assert result["targets"] and all(t["job"] == "tiles" for t in result["targets"])


def test_plan_runs_the_single_file_and_py3dtiles_only_where_asked():
    keys = [c.key for c in plan(["tiles", "terrain"], [1, 4, 16], ["files", "single"], [16])]
    assert keys == ["tiles/files/cim/w1", "tiles/files/cim/w4", "tiles/files/cim/w16", "tiles/files/py3dtiles/w16",
                    "tiles/single/cim/w16", "tiles/single/py3dtiles/w16",
                    "terrain/files/cim/w1", "terrain/files/cim/w4", "terrain/files/cim/w16", "terrain/single/cim/w16"]


def test_summary_ratios_and_targets(city):
    configs = plan(["tiles"], [1, 2], ["files"], [2])
    walls = {"tiles/files/cim/w1": [9.0, 10.0, 30.0], "tiles/files/cim/w2": [4.0, 5.0, 6.0],
             "tiles/files/py3dtiles/w2": [20.0]}
    n = city.facts["points"]
    samples = {k: [{"wall_s": w, "cpu_s": 1.0, "driver_peak_rss_mb": 1.0, "worker_peak_rss_mb": [2.0],
                    "tree_peak_rss_mb": 3.0, "output_bytes": 1, "load_average_1min_at_start": 0.5,
                    "work_bytes": city.facts["bytes"] * 2, "work_files": 3, "points": n, "tiles": 1, "product": True,
                    "stage_seconds": {"tile": 2.0}} for w in ws] for k, ws in walls.items()}
    decode = {f"{city.folder.name}/files": {"points_per_s": n / 0.5}}
    out = summarise(configs, samples, {"tiles": city}, decode)
    two = out["tiles/files/cim/w2"]
    assert two["wall_s"] == 5.0 and out["tiles/files/cim/w1"]["wall_s"] == 10.0  # medians
    assert two["speedup_vs_1_worker"] == 2.0 and two["speed_vs_py3dtiles"] == 4.0
    assert two["rate_vs_lazrs_parallel_decode"] == 0.1 and two["work_vs_input"] == 2.0
    assert two["stage_points_per_worker_s"] == {"tile": round(n / 2)}
    assert targets(out, 2) == [{"job": "tiles", "workers": 2, "measure": "work_vs_input", "target": "<= 1.5",
                                "measured": 2.0, "met": False}]


def test_billion_point_plan_arithmetic():
    # 1e6 points, 20 CPU s on 2 workers at a 1.5x speed-up; 4 MB in, 6 MB work, 2 MB products
    top = {"tool": "cim", "job": "terrain", "layout": "files", "workers": 2, "points": 1_000_000, "cpu_s": 20.0,
           "speedup_vs_1_worker": 1.5, "work_bytes": 6e6, "output_bytes": 2e6, "worker_peak_rss_mb": [300.0, 250.0],
           "tiles": 9}
    one = {**top, "workers": 1, "cpu_s": 18.0}
    del one["speedup_vs_1_worker"]
    result = {"configs": {"a": one, "b": top}, "inputs": {"terrain": {"bytes": 4e6}},
              "machine": {"nproc": 2, "cpu_model": "x"}}
    e = billion_point_plan(result, points=1e9, nodes=(1, 4))["jobs"]["terrain"]
    assert e["cpu_us_per_point"] == 20.0 and e["parallel_efficiency"] == 0.75 and e["efficiency_measured"]
    assert e["cpu_hours"] == pytest.approx(20e3 / 3600, abs=0.01)
    assert e["wall_hours"]["4x16"]["ideal"] == pytest.approx(20e3 / 3600 / 64, abs=0.001)
    assert e["wall_hours"]["1x16"]["at_measured_efficiency"] == pytest.approx(20e3 / 3600 / 12, abs=0.001)
    assert e["disk_gb"] == {"input": 4.0, "work_folder": 6.0, "products": 2.0}  # 4, 6 and 2 bytes a point
    assert e["peak_rss_mb_per_worker"] == 300.0
    # a node does 16 * 0.75 / 20e-6 = 600k points/s, each moving 4 + 2 * 6 + 2 = 18 bytes
    assert e["shared_fs_mb_per_s"] == {"1x16": 11, "4x16": 43}


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--jobs", "tiles,nope", "--out", "x.json"])
    assert exc.value.code == 2
    assert "unknown job nope" in capsys.readouterr().err
