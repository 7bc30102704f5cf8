"""The stage catalogue: entry-point registration (cim's own table and a plug-in package), typed artefacts wired
at validation (consumers find their producer's folder; missing or doubled producers and folder clashes are
refused before any work)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyproj
import pytest
from scipy.spatial import cKDTree

import cim
from cim.pipeline.job import JobConfigError, load_job
from cim.pipeline.stage import Stage, lookup, registry, stage_names
from tests.helpers import REPO, checkout_stage_table, cim_cli, delft_job, write_job

DELFT = (REPO / "data" / "delft").as_posix()


def test_the_registry_is_the_entry_point_table_and_every_entry_loads_its_stage() -> None:
    table = checkout_stage_table()
    assert set(table) <= set(stage_names())
    stages = registry()
    for name, target in table.items():
        cls = stages[name]
        assert issubclass(cls, Stage) and cls.name == name
        assert f"{cls.__module__}:{cls.__qualname__}" == target
    assert lookup("no.such.stage") is None


def test_a_consumer_finds_its_producer_in_a_renamed_folder(tmp_path: Path) -> None:
    out = tmp_path / "o"
    job = write_job(tmp_path / "j.toml", f"""
[job]
output = "{out.as_posix()}"
crs = "EPSG:7415"
[[stages]]
type = "read.las"
files = ["{DELFT}/ahn3_cropped_2.laz"]
[[stages]]
type = "tile"
size = 100.0
buffer = 30.0
[[stages]]
type = "buildings.lod1"
footprints = "{DELFT}/bgt_pand.sqlite"
folder = "bld"
[[stages]]
type = "write.cityjson"
""")
    result = cim_cli("run", str(job), "--scheduler", "threads")
    assert result.returncode == 0, result.stdout + result.stderr
    produced = set()
    for part in (out / "bld").glob("*.city.jsonl"):
        for line in part.read_text().splitlines()[1:]:  # first line: the CityJSON header
            produced |= set(json.loads(line)["CityObjects"])
    written = json.loads((out / "buildings.city.json").read_text())["CityObjects"]
    buildings = {k for k, v in written.items() if v["type"] == "Building"}
    assert len(buildings) == json.loads((out / "bld" / "report.json").read_text())["lod12"] > 10
    assert set(written) == produced  # every city object the producer wrote, nothing else
    assert not (out / "buildings").exists()


def test_a_consumer_without_producer_fails_validation_with_its_key_path_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    job = write_job(tmp_path / "j.toml", delft_job(out, extra='[[stages]]\ntype = "write.cityjson"\n'))
    result = cim_cli("run", str(job), "--scheduler", "threads")
    assert result.returncode == 2, result.stdout + result.stderr
    text = " ".join((result.stdout + result.stderr).split())
    assert "stages[2]: write.cityjson consumes 'buildings' but no stage produces it" in text
    assert "buildings.lod1 or buildings.lod2" in text  # the fix is named
    assert "Traceback" not in text and not out.exists()


def test_doubled_producers_late_producers_and_folder_clashes_are_all_reported(tmp_path: Path) -> None:
    extra = """
[[stages]]
type = "tiles.buildings"
[[stages]]
type = "buildings.lod1"
[[stages]]
type = "buildings.lod2"
folder = "lod2"
[[stages]]
type = "write.cityjson"
[[stages]]
type = "raster.dtm"
folder = "terrain"
[[stages]]
type = "raster.dsm"
folder = "terrain/"
[[stages]]
type = "raster.density"
folder = "../elsewhere"
[[stages]]
type = "write.las"
folder = "copy"
"""
    job = write_job(tmp_path / "j.toml", delft_job(tmp_path / "o", extra=extra))
    with pytest.raises(JobConfigError) as info:
        load_job(job)
    problems = {p.key_path: p.problem for p in info.value.problems}
    assert "buildings.lod1 (stages[3]) produces it later: put that stage first" in problems["stages[2]"]
    assert "which buildings.lod1 (stages[3]) and buildings.lod2 (stages[4]) all produce" in problems["stages[5]"]
    assert "like raster.dtm (stages[6])" in problems["stages[7].folder"]
    assert "not a folder inside the output folder" in problems["stages[8].folder"]
    assert len(problems) == 4  # two write.las (copy/, las/) are fine: nothing reads their 'las'


def test_optional_artefacts_are_wired_where_their_producers_write(tmp_path: Path) -> None:
    extra = '[[stages]]\ntype = "raster.dtm"\nfolder = "terrain/dtm"\n\n[[stages]]\ntype = "raster.ndsm"\n'
    job = load_job(write_job(tmp_path / "j.toml", delft_job(tmp_path / "o", extra=extra)))
    ndsm = job.stages_of("raster.ndsm")[0]
    assert ndsm.inputs == {"dtm": "terrain/dtm"}  # no DSM stage: the nDSM computes its DSM itself
    assert ndsm.uses == ("raster.dtm",)
    assert job.stages_of("write.las")[0].uses == ()  # reads only the points


def _plugin_job(tmp_path: Path) -> Path:
    extra = '[[stages]]\ntype = "test.mark"\nvalue = 7\nfolder = "elsewhere/marks"\n\n' \
            '[[stages]]\ntype = "test.read_marks"\n'
    return write_job(tmp_path / "j.toml", delft_job(tmp_path / "o", extra=extra, size=200.0))


def test_a_plugin_package_adds_stages_through_its_entry_points(tmp_path: Path, plugin_stages: Path) -> None:
    job = _plugin_job(tmp_path)
    result = cim_cli("run", str(job), "--workers", "2")  # Dask worker processes import the plug-in too
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    marks = sorted((tmp_path / "o" / "elsewhere" / "marks").glob("*.txt"))
    assert len(marks) == report["tiles"] > 1
    counts = [int(p.read_text().split()[1]) for p in marks]
    assert all(p.read_text().startswith("7 ") for p in marks)
    assert sum(counts) >= report["points"]  # every tile's points, buffers included
    listed = json.loads(cim_cli("stages", "--json").stdout)
    assert {"test.mark", "test.read_marks", "read.las"} <= set(listed)
    assert listed["test.read_marks"]["consumes"] == ["marks"] and listed["test.mark"]["produces"] == ["marks"]


def test_without_the_plugin_installed_its_stages_are_unknown(tmp_path: Path) -> None:
    assert str(REPO / "tests" / "plugins") not in os.environ.get("PYTHONPATH", "")
    result = cim_cli("run", str(_plugin_job(tmp_path)), "--scheduler", "threads")
    assert result.returncode == 2
    assert "unknown stage 'test.mark'" in result.stdout + result.stderr
    assert not (tmp_path / "o").exists()


def _kaiserslautern_input(tmp_path: Path) -> tuple[Path, cim.PointCloud]:
    rng = np.random.default_rng(5)
    n = 20_000
    cloud = cim.PointCloud({"x": 410_000 + rng.uniform(0, 180, n), "y": 5_479_600 + rng.uniform(0, 180, n),
                            "z": rng.uniform(230, 260, n), "intensity": rng.integers(0, 4000, n).astype("u2")},
                           cim.crs.resolve("EPSG:25832+7837"))
    return cim.write(tmp_path / "in.laz", cloud), cim.read(cim.write(tmp_path / "in.laz", cloud))


def test_a_job_writes_its_products_in_the_output_crs(tmp_path: Path) -> None:
    source, original = _kaiserslautern_input(tmp_path)
    job = write_job(tmp_path / "j.toml", delft_job(tmp_path / "o", files=source.as_posix()).replace(
        'crs = "EPSG:7415"', ""))
    result = cim_cli("run", str(job), "--scheduler", "threads", "--out-crs", "EPSG:25833+7837")
    assert result.returncode == 0, result.stdout + result.stderr
    written = cim.PointCloud.concat([cim.read(p) for p in sorted((tmp_path / "o" / "las").glob("*.laz"))])
    assert written.crs.equals(pyproj.CRS("EPSG:25833+7837"))
    truth = pyproj.Transformer.from_crs("EPSG:25832+7837", "EPSG:25833+7837", always_xy=True)  # independent
    x, y, z = truth.transform(original.x, original.y, original.z)
    expected = np.column_stack([x, y, z])
    assert len(written) == len(original)
    distance, nearest = cKDTree(expected).query(written.xyz)
    assert distance.max() <= 0.0009 and len(np.unique(nearest)) == len(original)  # each point once, 1 mm rounding
    assert np.abs(expected[:, 0] - original.x).min() > 100_000  # really another zone
    np.testing.assert_array_equal(np.sort(written.intensity), np.sort(original.intensity))


def test_the_area_of_a_job_with_an_output_crs_is_given_in_that_crs(tmp_path: Path) -> None:
    source, original = _kaiserslautern_input(tmp_path)
    x, y, _ = pyproj.Transformer.from_crs("EPSG:25832", "EPSG:25833", always_xy=True).transform(
        original.x, original.y, original.z)
    area = [float(np.quantile(x, 0.2)), float(np.quantile(y, 0.3)), float(np.quantile(x, 0.7)),
            float(np.quantile(y, 0.9))]
    inside = (x >= area[0]) & (x < area[2]) & (y >= area[1]) & (y < area[3])
    body = delft_job(tmp_path / "o", files=source.as_posix()).replace(
        'crs = "EPSG:7415"', f'output_crs = "EPSG:25833+7837"\narea = {area}')
    result = cim_cli("run", str(write_job(tmp_path / "j.toml", body)), "--scheduler", "threads")
    assert result.returncode == 0, result.stdout + result.stderr
    written = sum(len(cim.read(p)) for p in (tmp_path / "o" / "las").glob("*.laz"))
    assert json.loads((tmp_path / "o" / "report.json").read_text())["points"] == written
    assert abs(written - int(inside.sum())) <= 2 and 0.2 * len(original) < written < 0.5 * len(original)


def test_an_output_crs_without_exact_transformation_is_refused_before_any_work(tmp_path: Path) -> None:
    source, _ = _kaiserslautern_input(tmp_path)
    body = delft_job(tmp_path / "o", files=source.as_posix()).replace('crs = "EPSG:7415"', 'output_crs = "EPSG:7415"')
    result = cim_cli("run", str(write_job(tmp_path / "j.toml", body)), "--scheduler", "threads")
    assert result.returncode == 2, result.stdout + result.stderr
    text = " ".join((result.stdout + result.stderr).split())
    assert "no exact transformation from" in text and "Traceback" not in text
    assert not (tmp_path / "o" / "las").exists() and not (tmp_path / "o" / ".cim").exists()
    bad = write_job(tmp_path / "k.toml", body.replace('"EPSG:7415"', '"EPSG:99999999"'))
    with pytest.raises(JobConfigError, match="job.output_crs"):
        load_job(bad)
