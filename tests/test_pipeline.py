"""End-to-end jobs through the CLI: products, catalog, report, resume, validation and bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pystac
import pytest

import cim
from cim.errors import InputError
from cim.pipeline.execute import run_job
from cim.pipeline.job import JobConfigError, load_job
from tests.helpers import REPO, cim_cli, delft_job, product_digests, write_job

DELFT_POINTS = 640510 + 208432


def test_demo_job_runs_end_to_end_and_writes_tiles_catalog_and_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = cim_cli("run", "pipelines/demo.toml", "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["points"] == DELFT_POINTS
    laz = sorted((out / "las").glob("*.laz"))
    assert len(laz) == report["tiles"] > 1
    clouds = [cim.read(p) for p in laz]
    assert sum(len(c) for c in clouds) == DELFT_POINTS  # buffers dropped, nothing lost or doubled
    for path, cloud in zip(laz, clouds):
        ix, iy = (int(v) for v in path.stem.split("_"))
        assert np.all(np.floor(cloud.x / 100) == ix) and np.all(np.floor(cloud.y / 100) == iy)
        assert cloud.crs.to_epsg() == 7415
    classes = np.bincount(np.concatenate([c.classification for c in clouds]), minlength=32)
    assert classes[6] >= 0.99 * (246753 + 33312)  # AHN building labels kept (a few may become noise 7/18)
    assert classes[2] >= 0.99 * (195988 + 87130)
    catalog = pystac.Catalog.from_file(str(out / "stac" / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    clouds_items = [i for i in items if i.properties["cim:kind"] == "pointcloud"]
    copc_items = [i for i in clouds_items if i.assets["data"].media_type == "application/vnd.laszip+copc"]
    tile_items = [i for i in clouds_items if i not in copc_items]
    assert len(tile_items) == len(laz) and len(copc_items) == 1
    assert all(item.properties["proj:code"] == "EPSG:7415" for item in items)
    assert sum(item.properties["pc:count"] for item in tile_items) == DELFT_POINTS
    assert copc_items[0].properties["pc:count"] == DELFT_POINTS
    assert all(Path(item.assets["data"].get_absolute_href()).exists() for item in items)
    kinds = {i.properties["cim:kind"] for i in items}
    assert {"pointcloud", "raster", "cityjson", "3dtiles"} <= kinds, kinds
    assert (out / "buildings.city.json").is_file() and (out / "dtm.vrt").is_file()
    assert (out / "3dtiles" / "pointcloud" / "tileset.json").is_file()
    assert (out / "cim.log").read_text().count("done") >= len(laz)
    work = sum(p.stat().st_size for p in (out / ".cim").rglob("*") if p.is_file())
    laz_in = sum(p.stat().st_size for p in (REPO / "data" / "delft").glob("ahn3_cropped_*.laz"))
    assert work <= 1.5 * laz_in, f"work folder {work} B for {laz_in} B of LAZ"


def test_rerun_skips_everything_and_an_option_change_reruns_only_what_depends_on_it(tmp_path: Path) -> None:
    out = tmp_path / "o"
    job = write_job(tmp_path / "job.toml", delft_job(out))
    first = cim.run(job)
    assert first.report.ok
    digests = product_digests(out)
    again = cim.run(job)
    assert {o.status for o in again.report.outcomes.values()} == {"skipped"}
    assert product_digests(out) == digests
    changed = write_job(tmp_path / "job2.toml", delft_job(out).replace('type = "write.las"',
                                                                       'type = "write.las"\ncompress = false'))
    third = cim.run(changed)
    statuses = {o.key.split("/")[0]: o.status for o in third.report.outcomes.values()}
    assert statuses["partition"] == "skipped" and statuses["00-write.las"] == "done"
    assert sorted((out / "las").glob("*.las"))
    forced = cim.run(job, force=True)
    assert {o.status for o in forced.report.outcomes.values()} == {"done"}


def test_job_typos_are_reported_with_key_paths_before_any_work(tmp_path: Path) -> None:
    job = write_job(tmp_path / "bad.toml", """
[job]
name = "x"
outptu = "o"

[[stages]]
type = "read.las"
files = ["does-not-exist/*.laz"]

[[stages]]
type = "tile"
size = "big"

[[stages]]
type = "write.lass"
""")
    result = cim_cli("run", str(job))
    assert result.returncode == 2
    message = result.stderr
    assert "job.outptu: unknown key" in message
    assert "stages[0].files[0]: no file matches" in message
    assert "stages[1].size" in message
    assert "stages[2].type: unknown stage 'write.lass'; did you mean 'write.las'?" in message
    assert "Traceback" not in message
    assert not (tmp_path / "o").exists()


def test_file_without_crs_is_refused_unless_one_is_given(tmp_path: Path) -> None:
    job = write_job(tmp_path / "j.toml", delft_job(tmp_path / "o").replace('crs = "EPSG:7415"\n', ""))
    result = cim_cli("run", str(job))
    assert result.returncode == 2
    assert "ahn3_cropped_1.laz: the file declares no CRS; give one with --crs" in result.stderr
    ok = cim_cli("run", str(job), "--crs", "EPSG:7415", "--scheduler", "threads")
    assert ok.returncode == 0, ok.stderr


def test_two_inputs_with_different_crs_are_refused(tmp_path: Path) -> None:
    data = (REPO / "data" / "delft").as_posix()
    job = write_job(tmp_path / "j.toml", f"""
[job]
output = "{(tmp_path / 'o').as_posix()}"
[[stages]]
type = "read.las"
files = ["{data}/ahn3_cropped_1.laz"]
crs = "EPSG:7415"
[[stages]]
type = "read.las"
files = ["{data}/ahn3_cropped_2.laz"]
crs = "EPSG:28992"
[[stages]]
type = "write.las"
""")
    result = cim_cli("run", str(job))
    assert result.returncode == 2
    assert "ahn3_cropped_2.laz: CRS EPSG:28992" in result.stderr and "differs" in result.stderr


def test_truncated_input_fails_cleanly_and_writes_no_tiles(tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    source = (REPO / "data" / "delft" / "ahn3_cropped_2.laz").read_bytes()
    (data / "a_truncated.laz").write_bytes(source[: len(source) // 3])
    job = write_job(tmp_path / "j.toml", delft_job(tmp_path / "o").replace(
        (REPO / "data" / "delft").as_posix() + "/ahn3_cropped_*.laz", data.as_posix() + "/*.laz"))
    result = cim_cli("run", str(job), "--scheduler", "threads")
    assert result.returncode == 2  # refused at planning: the LAZ chunk table lies beyond the end
    assert "a_truncated.laz" in result.stdout + result.stderr
    assert not list((tmp_path / "o").glob("las/*.laz"))


def test_area_without_points_is_a_clear_error(tmp_path: Path) -> None:
    body = delft_job(tmp_path / "o").replace('crs = "EPSG:7415"', 'crs = "EPSG:7415"\narea = [0, 0, 10, 10]')
    job = write_job(tmp_path / "j.toml", body)
    with pytest.raises(InputError, match="no points inside the job area"):
        cim.run(job)


def test_keep_going_finishes_other_tiles_and_reports_the_failure(tmp_path: Path, plugin_stages: Path) -> None:
    out = tmp_path / "o"
    body = delft_job(out).replace('[[stages]]\ntype = "write.las"',
                                  '[[stages]]\ntype = "test.fail_on_tile"\ntile = "849_4475"\n\n'
                                  '[[stages]]\ntype = "write.las"')
    job = load_job(write_job(tmp_path / "j.toml", body))
    result = run_job(job, scheduler="threads", keep_going=True)
    failed = result.report.by_status("failed")
    assert [o.key for o in failed] == ["00-test.fail_on_tile/849_4475"]
    assert sorted(o.key for o in result.report.by_status("cancelled")) == ["01-write.las/849_4475", "catalog"]
    assert "synthetic failure" in failed[0].error
    written = {p.stem for p in (out / "las").glob("*.laz")}
    assert "849_4475" not in written and len(written) == result.tiles - 1
    stopped = run_job(job, scheduler="threads", keep_going=False)
    assert not stopped.report.ok


def test_invalid_job_file_raises_every_problem_at_once(tmp_path: Path) -> None:
    job = write_job(tmp_path / "j.toml", "[job]\nname = 3\n[[stages]]\ntype = 'tile'\n")
    with pytest.raises(JobConfigError) as info:
        load_job(job)
    text = str(info.value)
    assert "job.name" in text and "reader stage" in text


def test_stages_lists_the_catalogue_with_options() -> None:
    result = cim_cli("stages", "--json")
    assert result.returncode == 0
    catalogue = json.loads(result.stdout)
    assert {"read.las", "tile", "write.las"} <= set(catalogue)
    assert catalogue["tile"]["options"]["size"]["default"] == 250.0


def test_area_restricts_the_job_and_copc_is_read_by_bounds(shared_data: Path, tmp_path: Path) -> None:
    copc = shared_data / "edge-cases" / "1.2-with-color.copc.laz"
    everything = cim.read(copc)
    b = everything.bounds
    area = [b.minx, b.miny, (b.minx + b.maxx) / 2, (b.miny + b.maxy) / 2]
    inside = (everything.x >= area[0]) & (everything.x < area[2]) & (everything.y >= area[1]) & (everything.y < area[3])
    job = write_job(tmp_path / "j.toml", f"""
[job]
output = "{(tmp_path / 'o').as_posix()}"
area = {area}
[[stages]]
type = "read.las"
files = ["{copc.as_posix()}"]
[[stages]]
type = "tile"
size = 1000.0
buffer = 10.0
[[stages]]
type = "write.las"
""")
    result = cim.run(job)
    assert result.report.ok and result.points == int(inside.sum()) > 0
    written = cim.PointCloud.concat([cim.read(p) for p in (tmp_path / "o" / "las").glob("*.laz")])
    assert len(written) == int(inside.sum())
    assert written.has("red")  # RGB survives the pipeline (point format 7)


def test_stages_wait_for_and_rerun_with_the_stages_they_use(tmp_path: Path, plugin_stages: Path) -> None:
    out = tmp_path / "o"

    def job(value: int) -> Path:
        extra = (f'[[stages]]\ntype = "test.mark"\nvalue = {value}\n\n[[stages]]\ntype = "test.read_marks"\n\n')
        return write_job(tmp_path / f"j{value}.toml", delft_job(out, extra=extra))

    first = run_job(load_job(job(1)), scheduler="threads")
    reads = [o for o in first.report.outcomes.values() if o.stage == "test.read_marks"]
    assert reads and all(o.result["stats"]["mark"].startswith("1 ") for o in reads)
    second = run_job(load_job(job(2)), scheduler="threads")
    status = {}
    for o in second.report.outcomes.values():
        status.setdefault(o.stage, set()).add(o.status)
    assert status["test.mark"] == {"done"} and status["test.read_marks"] == {"done"}  # uses -> re-run
    assert status["write.las"] == {"skipped"}  # reads only the points: untouched by the option change
    assert all(o.result["stats"]["mark"].startswith("2 ") for o in second.report.outcomes.values()
               if o.stage == "test.read_marks")


def test_infinite_coordinates_are_refused_with_the_file_name(repo_data: Path, tmp_path: Path) -> None:
    cloud = cim.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs="EPSG:7415")[:2000]
    source = cim.write(tmp_path / "in" / "overflow.las", cloud)
    data = bytearray(source.read_bytes())
    data[131:139] = struct.pack("<d", 1e308)
    source.write_bytes(bytes(data))  # x scale 1e308: decoded x overflows to infinity
    job = write_job(tmp_path / "j.toml", delft_job(tmp_path / "o").replace(
        (REPO / "data" / "delft").as_posix() + "/ahn3_cropped_*.laz", source.as_posix()))
    result = cim_cli("run", str(job), "--scheduler", "threads")
    assert result.returncode == 2  # refused at planning by the header guard (cim.guards), before any tile
    assert "overflow.las: header scale [1e+308, " in result.stderr and "not plausible" in result.stderr
    assert not (tmp_path / "o" / "las").exists()


def test_a_job_imports_only_the_modules_of_its_stages(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.toml", delft_job(tmp_path / "out", extra='[[stages]]\ntype = "tiles.pointcloud"\n'))
    code = f"import sys; from cim.pipeline.job import load_job; load_job(r'{job}'); " \
           "print(sorted(m for m in ('scipy', 'rasterio', 'open3d', 'cim.stages.terrain', 'plyfile', 'pye57') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
