"""`cim panoramas` is a job (the ``panoramas.publish`` stage, one task per image): it resumes after kill -9 redoing
only the images that were not finished, is refused while another run holds the output folder, and its options
cannot drift from the stage's. (Its products equal those of the equivalent `cim run` job, with report.json and
cim.log: tests/test_panoramas_synth.py, which runs it once for several tests.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cim.panoramas.georef import load_panoramas
from tests.helpers import REPO, cim_cli

CRS = "EPSG:25832+7837"
RUN = ("--scheduler", "threads", "--workers", "1")
ITEM = "panoramas.publish"


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout + done.stderr


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _command(synth_city, *extra: str) -> list[str]:
    return ["panoramas", str(synth_city.poses_csv), "--images", str(synth_city.panorama_dir), *extra]


def test_panoramas_resumes_after_kill_9_redoing_only_the_missing_images(synth_city, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    command = _command(synth_city, "--out", str(out), *RUN)
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "cim.cli", *command], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / ".cim" / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if manifest.exists() and f"{ITEM}/" in manifest.read_text():
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "report.json").exists()  # killed after its first image, before the end
    finished = {json.loads(line)["key"] for line in manifest.read_text().splitlines() if line.endswith("}")}
    names = sorted(p.stem for p in synth_city.panorama_dir.glob("*.jpg"))
    keys = {f"00-{ITEM}/{n}" for n in names}
    assert 1 <= len(finished & keys) < len(keys)

    _ok(cim_cli(*command))
    tasks = {t["task"] for t in _report(out)["timeline"]["tasks"]}  # the tasks that ran
    assert tasks & keys == keys - finished  # exactly the images the killed run had not finished
    assert f"00-{ITEM}/finish" in tasks and _report(out)["ok"]
    assert [p.name for p in load_panoramas(out / "panoramas.json")] == names
    _ok(cim_cli(*command))
    assert all(row["done"] == 0 for row in _report(out)["stages"])  # a third run redoes nothing


def test_a_second_run_into_the_same_folder_is_refused(synth_city, tmp_path: Path) -> None:
    from cim import outlock

    out = tmp_path / "locked"
    lock = outlock.acquire(out)  # this process runs a job into the folder
    try:
        refused = cim_cli(*_command(synth_city, "--out", str(out)), *RUN)
    finally:
        lock.release()
    assert refused.returncode == 2 and "in use" in refused.stderr, refused.stderr
    assert sorted(p.name for p in out.iterdir()) == [".cim"] and not (out / "panoramas").exists()


def test_panoramas_options_are_the_stage_options() -> None:
    """Each `cim panoramas` option named like a ``panoramas.publish`` option has the stage's default (--no-plates
    is ``plates = false``), and the template puts its value into the stage."""
    import typer

    from cim.cli.app import _load_commands, app
    from cim.cli.jobs import panoramas_job
    from cim.stages.panorama_publish import PublishOptions

    _load_commands()
    command = {c.name: c for c in typer.main.get_command(app).commands.values()}["panoramas"]
    params = {p.name: p.default for p in command.params}
    fields = PublishOptions.model_fields
    shared = sorted(n for n in set(params) & set(fields) if not fields[n].is_required() and n != "points")
    assert len(shared) >= 8, shared  # --points feeds the depth maps and the colorization (read.las)
    for name in shared:
        assert params[name] == fields[name].default, name
    assert params["no_plates"] is (not fields["plates"].default)
    stage = panoramas_job(Path("p.csv"), Path("images"), Path("/out"), detect_width=4321, plates=False)["stages"][0]
    assert stage["detect_width"] == 4321 and stage["plates"] is False
    PublishOptions(**{k: v for k, v in stage.items() if k != "type"})  # a valid table of the stage


def test_colorize_without_panoramas_is_refused_before_any_work(synth_city, tmp_path: Path) -> None:
    """No panoramas option and no panoramas.publish before it: one line naming the stage's key, exit 2, no output
    folder (it used to fail in its tile tasks after the partition)."""
    import tomllib

    job = tmp_path / "c.toml"
    job.write_text(f"""[job]\nname = "c"\noutput = "out"\ncrs = "{CRS}"\n
[[stages]]\ntype = "read.las"\nfiles = ["{synth_city.mls_laz}"]\n
[[stages]]\ntype = "tile"\nsize = 250.0\n
[[stages]]\ntype = "panoramas.colorize"\n""")
    refused = cim_cli("run", str(job), *RUN)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "stages[2].panoramas: panoramas.colorize needs a panoramas.json" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "out").exists()
    from cim.pipeline.job import parse_job

    document = tomllib.loads(job.read_text())
    document["stages"][2]["panoramas"] = str(tmp_path / "panoramas.json")  # named: valid once the file exists
    (tmp_path / "panoramas.json").write_text("{}")
    assert parse_job(document, job).stages_of("panoramas.colorize")[0].check() == []


def test_the_pipeline_file_is_a_valid_job(synth_city, tmp_path: Path) -> None:
    """pipelines/panoramas.toml validates with the fixture's files (publish, colorize by artefact, tiles)."""
    import tomllib

    from cim.pipeline.job import parse_job

    document = tomllib.loads((REPO / "pipelines" / "panoramas.toml").read_text())
    document["job"]["output"] = str(tmp_path / "out")
    publish = next(s for s in document["stages"] if s["type"] == ITEM)
    publish.update(poses=str(synth_city.poses_csv), images=str(synth_city.panorama_dir),
                   points=[str(synth_city.mls_laz)])
    document["stages"][0]["files"] = [str(synth_city.mls_laz)]
    job = parse_job(document, REPO / "pipelines" / "panoramas.toml")
    colorize = job.stages_of("panoramas.colorize")[0]
    assert colorize.uses == (ITEM,) and colorize.inputs == {"panoramas": ""}


def test_a_job_without_readers_must_be_item_stages_with_a_crs(synth_city, tmp_path: Path) -> None:
    from cim.errors import ConfigError
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import JobConfigError, parse_job

    publish = {"type": ITEM, "poses": str(synth_city.poses_csv), "images": str(synth_city.panorama_dir)}
    with pytest.raises(JobConfigError, match=r"stages\[1\]: panoramas.colorize works on points: a job needs a reader"):
        parse_job({"job": {"crs": CRS}, "stages": [publish, {"type": "panoramas.colorize"}]}, tmp_path / "j.toml")
    job = parse_job({"job": {"output": str(tmp_path / "out")}, "stages": [publish]}, tmp_path / "j.toml")
    with pytest.raises(ConfigError, match="job.crs: a job without point readers needs the CRS"):
        run_job(job, scheduler="threads", workers=1)
    assert not (tmp_path / "out").exists()


def test_an_item_only_job_reports_its_images_and_each_task_its_image(synth_city, tmp_path: Path) -> None:
    """A job of item stages only says what it did (images, not "0 tiles, 0 points") in its report, printed title
    and profile page, and each image's task carries its image in the timeline and on the page."""
    out = tmp_path / "out"
    done = cim_cli(*_command(synth_city, "--out", str(out), "--detect-width", "1024", "--fine-width", "0",
                             "--profile"), *RUN)
    _ok(done)
    names = sorted(p.stem for p in synth_city.panorama_dir.glob("*.jpg"))
    report = _report(out)
    assert report["items"] == {"images": len(names)} and report["tiles"] == 0
    title = next(line for line in done.stdout.splitlines() if line.startswith("job "))
    assert f": {len(names)} images, " in title and "tiles" not in title and "points" not in title, title
    tasks = {t["task"]: t for t in report["timeline"]["tasks"]}
    assert {tasks[f"00-{ITEM}/{n}"]["item"] for n in names} == set(names)
    assert tasks[f"00-{ITEM}/finish"]["item"] == "" and all(t["tile"] == "" for t in tasks.values())
    page = (out / "profile.html").read_text()
    assert f"tasks, {len(names)} images, " in page and "0 tiles" not in page
    assert all(f"· item {n} ·" in page for n in names)  # each image's bar names its image
