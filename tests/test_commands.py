"""Every command is a job: ``cim ground``, ``cim dtm``, ``cim buildings`` and ``cim tiles`` give the products of the
equivalent ``cim run`` job, resume (also after kill -9), write ``report.json`` and ``cim.log``; their options
cannot drift from the stages'; ``cim clean`` removes a finished job's work folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cim.io import las
from tests.helpers import REPO, cim_cli, product_digests, write_job

CRS = "EPSG:7415"
RUN = ("--scheduler", "threads", "--workers", "1")


@pytest.fixture(scope="module")
def pieces(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two adjacent Delft files of about 25,000 points each (80 m x 40 m together), classes as delivered."""
    folder = tmp_path_factory.mktemp("inputs")
    cloud = las.read(REPO / "data" / "delft" / "ahn3_cropped_2.laz", crs=CRS)
    x0, y0 = 84990.0, 447520.0
    inside = (cloud.x >= x0) & (cloud.x < x0 + 80) & (cloud.y >= y0) & (cloud.y < y0 + 40)
    assert inside.sum() > 20_000
    cloud = cloud[inside]
    west = cloud.x < x0 + 40
    paths = [folder / "west.laz", folder / "east.laz"]
    for path, mask in zip(paths, (west, ~west)):
        las.write(path, cloud[mask])
    return paths


def _job(out: Path, name: str, files: list[Path], stages: str) -> Path:
    listed = ", ".join(f'"{f.as_posix()}"' for f in files)
    return write_job(out.parent / f"{out.name}.toml", f"""
[job]
name = "{name}"
output = "{out.as_posix()}"
crs = "{CRS}"

[[stages]]
type = "read.las"
files = [{listed}]
{stages}""")


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout + done.stderr


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _skipped_everything(out: Path) -> bool:
    return all(row["done"] == 0 and row["skipped"] > 0 for row in _report(out)["stages"])


def _same_as_job_and_resumes(command: list[str], stages: str, product: str, pieces: list[Path], tmp_path: Path
                             ) -> None:
    """``cim <command>`` writes the products of ``cim run`` of its job (``stages``; ``product`` among them), and
    runs again without redoing anything."""
    out = tmp_path / command[0]
    _ok(cim_cli(*command, "--out", str(out), *RUN))
    job_out = tmp_path / "run"
    _ok(cim_cli("run", str(_job(job_out, command[0], pieces, stages)), *RUN))
    digests = product_digests(out)
    assert digests == product_digests(job_out) and product in digests
    _ok(cim_cli(*command, "--out", str(out), *RUN))
    assert _skipped_everything(out) and product_digests(out) == digests


GROUND_STAGES = """
[[stages]]
type = "tile"
size = 40.0
buffer = 10.0

[[stages]]
type = "filter.outliers"

[[stages]]
type = "classify.ground"

[[stages]]
type = "write.las"
folder = ""
per_source = true
"""


def test_ground_gives_the_run_jobs_products_and_resumes_after_kill_9(pieces: list[Path], tmp_path: Path) -> None:
    command = ["ground", *map(str, pieces), "--crs", CRS, "--tile-size", "40", "--buffer", "10"]
    out = tmp_path / "ground"
    _ok(cim_cli(*command, "--out", str(out), *RUN))
    job_out = tmp_path / "run"
    _ok(cim_cli("run", str(_job(job_out, "ground", pieces, GROUND_STAGES)), *RUN))
    digests = product_digests(out)
    assert digests == product_digests(job_out)
    assert {"west.laz", "east.laz"} <= set(digests)
    assert _report(out)["ok"] and (out / "cim.log").stat().st_size > 0
    for piece in pieces:  # every point, in the input's order, classified
        before, after = las.read(piece), las.read(out / piece.name)
        np.testing.assert_array_equal(after.xyz, before.xyz)
        assert set(np.unique(after["classification"])) >= {1, 2}

    # kill -9 once the first task is recorded, then the same command finishes the rest
    killed = tmp_path / "killed"
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "cim.cli", *command, "--out", str(killed), *RUN], cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = killed / ".cim" / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if manifest.exists() and manifest.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert manifest.exists() and not (killed / "report.json").exists()  # killed after its first task, before the end
    _ok(cim_cli(*command, "--out", str(killed), *RUN))
    stages = _report(killed)["stages"]
    assert sum(row["skipped"] for row in stages) >= 1 and sum(row["done"] for row in stages) >= 1
    assert product_digests(killed) == digests


def test_dtm_gives_the_run_jobs_products_and_resumes(pieces: list[Path], tmp_path: Path) -> None:
    command = ["dtm", *map(str, pieces), "--crs", CRS, "--tile-size", "40", "--buffer", "10", "--resolution", "1"]
    rasters = "".join(f'\n[[stages]]\ntype = "raster.{k}"\nresolution = 1.0\n' for k in ("dtm", "dsm", "ndsm",
                                                                                      "density"))
    stages = ('\n[[stages]]\ntype = "tile"\nsize = 40.0\nbuffer = 10.0\n\n[[stages]]\ntype = "filter.outliers"\n'
              '\n[[stages]]\ntype = "classify.ground"\nmode = "auto"\n' + rasters)
    _same_as_job_and_resumes(command, stages, "dtm.vrt", pieces, tmp_path)


def test_tiles_gives_the_run_jobs_products_and_resumes(pieces: list[Path], tmp_path: Path) -> None:
    command = ["tiles", *map(str, pieces), "--crs", CRS, "--tile-size", "40"]
    stages = ('\n[[stages]]\ntype = "tile"\nsize = 40.0\nbuffer = 0.0\n\n'
              '[[stages]]\ntype = "tiles.pointcloud"\nfolder = ""\n')
    _same_as_job_and_resumes(command, stages, "tileset.json", pieces, tmp_path)


def test_buildings_gives_the_run_jobs_products_and_resumes(pieces: list[Path], tmp_path: Path) -> None:
    footprints = REPO / "data" / "delft" / "bgt_pand.sqlite"
    command = ["buildings", *map(str, pieces), "--crs", CRS, "--tile-size", "40", "--buffer", "20",
               "--footprints", str(footprints), "--lod1-only"]
    stages = ('\n[[stages]]\ntype = "tile"\nsize = 40.0\nbuffer = 20.0\n\n'
              '[[stages]]\ntype = "raster.dtm"\nresolution = 0.5\n\n'
              f'[[stages]]\ntype = "buildings.lod1"\nclassify = "auto"\nfootprints = "{footprints.as_posix()}"\n\n'
              '[[stages]]\ntype = "write.cityjson"\n\n[[stages]]\ntype = "tiles.buildings"\n')
    _same_as_job_and_resumes(command, stages, "buildings.city.json", pieces, tmp_path)
    assert json.loads((tmp_path / "buildings" / "buildings.city.json").read_text())["CityObjects"]


def test_command_options_match_the_stage_options() -> None:
    """Each command option that sets a stage option defaults to the stage's default (or to the template's own
    value, listed with its reason), and the template puts the option's value where the map says."""
    import typer

    from cim.cli import jobs
    from cim.cli.app import _load_commands, app
    from cim.pipeline.stage import lookup

    _load_commands()
    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}
    templates = {"ground": jobs.ground_job, "dtm": jobs.dtm_job, "buildings": jobs.buildings_job,
                 "tiles": jobs.tiles_job,
                 "panoramas": lambda files, out, **o: jobs.panoramas_job(Path("p"), Path("i"), out, points=files,
                                                                         **o)}
    for command, mapping in jobs.STAGE_OPTIONS.items():
        params = {p.name: p for p in commands[command].params}
        for param, (stage, option) in mapping.items():
            field = lookup(stage).Options.model_fields[option]
            expected = jobs.TEMPLATE_DEFAULTS.get(command, {}).get(param, field.default)
            assert params[param].default == expected, (command, param)
            value = {bool: True, str: "16", int: 4321, float: 12.5}[type(field.default)]
            document = templates[command](["a.laz"], Path("/out"), **{param: value})
            placed = [s for s in document["stages"] if s["type"] == stage]
            assert placed and placed[0][option] == value, (command, param)


def test_clean_removes_the_work_folder_of_a_finished_job_only(pieces: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    _ok(cim_cli("tiles", str(pieces[0]), "--crs", CRS, "--out", str(out), *RUN))
    digests = product_digests(out)
    work = out / ".cim"
    size = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    (out / "report.json").write_text(json.dumps({**_report(out), "ok": False}))
    refused = cim_cli("clean", str(out))
    assert refused.returncode == 2 and "has not finished" in refused.stderr and work.is_dir()
    _ok(cim_cli("tiles", str(pieces[0]), "--crs", CRS, "--out", str(out), *RUN))
    done = cim_cli("clean", str(out))
    _ok(done)
    assert not work.exists() and f"{size / 1e6:.1f} MB freed" in done.stdout
    assert product_digests(out) == digests
    again = cim_cli("clean", str(out))
    assert again.returncode == 2 and "no work folder" in again.stderr


def test_tiles_publish_no_withheld_point_and_check_the_others(tmp_path: Path) -> None:
    from cim.tiles3d.check import check_tileset
    from tests.test_las_dimensions import _terrain_file

    source = tmp_path / "flagged.las"
    original = _terrain_file(source, 6)
    out = tmp_path / "tiles"
    _ok(cim_cli("tiles", str(source), "--crs", "EPSG:25832+7837", "--out", str(out), *RUN))  # --check is on
    withheld = int(np.count_nonzero(np.asarray(original.withheld, dtype=bool)))
    assert withheld > 0 and check_tileset(out / "tileset.json").points == len(original.points) - withheld
