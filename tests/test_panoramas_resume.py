"""Resumes of `cim panoramas` (the ``panoramas.publish`` stage run as a job) are never stale: the tasks'
fingerprints cover the contents of the pose file, the images and the point clouds, the code of the chain, and the
products they wrote (cim.runner.fingerprints)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cim.cli.jobs import panoramas_job
from cim.pipeline.execute import run_job
from cim.pipeline.job import parse_job
from cim.runner import fingerprints

#: small detection views and depth maps: the synthetic images are 512 x 256
OPTIONS = {"detect_width": 1024, "depth_width": 256, "depth_max": 40.0}


@pytest.fixture
def drive(synth_city, tmp_path: Path) -> dict[str, Path]:
    """A copy of the synthetic drive's poses and images (the tests edit them) and an output folder."""
    images = tmp_path / "images"
    images.mkdir()
    for image in synth_city.panorama_dir.glob("*.jpg"):
        shutil.copy2(image, images / image.name)
    poses = shutil.copy2(synth_city.poses_csv, tmp_path / "poses.csv")
    points = shutil.copy2(synth_city.mls_laz, tmp_path / "mls.laz")
    return {"poses": Path(poses), "images": images, "out": tmp_path / "out", "points": Path(points)}


def publish(poses: Path, images: Path, out: Path, depth_points: Path | None = None, **options) -> dict[str, str]:
    """Run a job of the ``panoramas.publish`` stage alone (with depth maps from ``depth_points``, no colorization);
    returns the status of each image's task."""
    document = panoramas_job(poses, images, out, **options)
    if depth_points is not None:
        document["stages"][0]["points"] = [str(depth_points)]
    run = run_job(parse_job(document, out / "panoramas.toml"), scheduler="threads", workers=1)
    assert run.report.ok, run.report.by_status("failed")
    return {k.split("/")[1]: o.status for k, o in run.report.outcomes.items()
            if o.stage == "panoramas.publish" and not k.endswith("/finish")}


def _run(drive: dict[str, Path]) -> dict:
    statuses = publish(drive["poses"], drive["images"], drive["out"], drive["points"], **OPTIONS)
    return {"panoramas": len(statuses), "skipped": sum(s == "skipped" for s in statuses.values())}


def _products(out: Path, name: str) -> dict[str, bytes]:
    folder = out / "panoramas" / name
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _names(drive: dict[str, Path]) -> list[str]:
    return sorted(p.stem for p in drive["images"].glob("*.jpg"))


def test_a_same_size_pose_edit_reruns_only_the_panoramas_it_moves(drive) -> None:
    first = _run(drive)
    assert first["panoramas"] == 4 and first["skipped"] == 0
    names = _names(drive)
    before = {n: _products(drive["out"], n) for n in names}
    text = drive["poses"].read_bytes()
    line = next(row.rstrip(b"\r") for row in text.split(b"\n") if names[1].encode() in row)
    heading = line.rsplit(b"\t", 1)[1]
    assert heading.startswith(b"89.0")
    edited = text.replace(line, line[: -len(heading)] + b"89.5" + heading[4:])  # half a degree: same size
    stat = drive["poses"].stat()
    drive["poses"].write_bytes(edited)
    os.utime(drive["poses"], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same name, size and mtime
    assert drive["poses"].stat().st_size == stat.st_size
    second = _run(drive)
    assert second["skipped"] == 3
    after = {n: _products(drive["out"], n) for n in names}
    assert after[names[1]]["depth.tif"] != before[names[1]]["depth.tif"]  # re-made from the new pose
    assert after[names[1]]["tiles/preview.jpg"] != before[names[1]]["tiles/preview.jpg"]  # north-up tiles rotate
    for name in names[:1] + names[2:]:
        assert after[name] == before[name]


def test_touch_reruns_nothing_and_a_truncated_or_edited_product_is_remade(drive) -> None:
    _run(drive)
    names = _names(drive)
    before = _products(drive["out"], names[0])
    for path in [drive["poses"], drive["points"], *drive["images"].iterdir()]:
        path.touch()  # new mtimes, same contents: the content hashes say nothing changed
    assert _run(drive)["skipped"] == 4
    tile = drive["out"] / "panoramas" / names[0] / "tiles" / "1" / "f" / "0" / "0.jpg"
    tile.write_bytes(tile.read_bytes()[:100])  # a tile cut short after the run
    image = drive["out"] / "panoramas" / names[2] / "image.jpg"
    image.write_bytes(image.read_bytes()[::-1])  # same size, other bytes
    third = _run(drive)
    assert third["skipped"] == 2
    assert _products(drive["out"], names[0]) == before  # re-made, the same bytes as the first time
    assert (drive["out"] / "panoramas" / names[2] / "image.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_an_image_edit_reruns_its_panorama(drive) -> None:
    _run(drive)
    names = _names(drive)
    image = drive["images"] / f"{names[3]}.jpg"
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF  # a byte of the JPEG data, before its end marker
    stat = image.stat()
    staged = image.with_suffix(".new")
    staged.write_bytes(bytes(data))
    os.utime(staged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(staged, image)  # same name, size and mtime, as rsync -t delivers it (a new inode)
    assert _run(drive)["skipped"] == 3


def test_a_code_change_reruns_the_chain(drive, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(drive)
    real = fingerprints.module_source

    def edited(name: str) -> bytes:
        return real(name) + (b"\n# edited\n" if name == "cim.panoramas.depth" else b"")

    monkeypatch.setattr(fingerprints, "module_source", edited)  # the chain imports the depth maps' module
    assert _run(drive)["skipped"] == 0
    assert _run(drive)["skipped"] == 4
    import cv2

    monkeypatch.setattr(cv2, "__version__", cv2.__version__ + ".1")  # an OpenCV upgrade: JPEG coding, plate cascade
    assert _run(drive)["skipped"] == 0


def test_a_same_size_edit_of_panoramas_json_reruns_the_colorize_step(drive, tmp_path: Path) -> None:
    """The pipeline hashes the files a stage's options name: ``panoramas.colorize`` follows panoramas.json."""
    from helpers import write_job

    from cim.io import las
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import load_job

    _run(drive)
    panoramas = drive["out"] / "panoramas.json"
    job = load_job(write_job(tmp_path / "job.toml", f"""
[job]
name = "colour"
output = "{tmp_path / 'job-out'}"
crs = "EPSG:25832+7837"

[[stages]]
type = "read.las"
files = ["{drive['points']}"]

[[stages]]
type = "tile"
size = 250.0
buffer = 30.0

[[stages]]
type = "panoramas.colorize"
panoramas = "{panoramas}"
buffer_width = 512
levels = 2

[[stages]]
type = "write.las"
"""))

    def colour_steps() -> dict[str, str]:
        run = run_job(job, scheduler="threads", workers=1)
        assert run.report.ok
        return {k: o.status for k, o in run.report.outcomes.items() if o.stage == "panoramas.colorize"}

    def colours() -> bytes:
        cloud = las.read(next((tmp_path / "job-out" / "las").glob("*.laz")))
        return cloud["red"].tobytes() + cloud["green"].tobytes() + cloud["blue"].tobytes()

    first = colour_steps()
    assert first and set(first.values()) == {"done"}
    before = colours()
    panoramas.touch()
    assert set(colour_steps().values()) == {"skipped"}
    text = panoramas.read_bytes()
    x = text.split(b'"position": [', 1)[1].split(b",", 1)[0].strip()
    moved = text.replace(x, str(float(x) + 10.0).encode()[: len(x)].ljust(len(x), b"0"), 1)  # 10 m east
    assert len(moved) == len(text) and moved != text
    panoramas.write_bytes(moved)
    assert set(colour_steps().values()) == {"done"}
    assert colours() != before


def test_an_image_edit_reruns_the_colorize_steps_that_read_the_panoramas(drive) -> None:
    """In one job (publish, then colorize by the ``panoramas`` artefact), an image edit redoes that image, the index
    and the colorize steps; nothing else of the point stages is redone without a change."""
    from cim.cli.jobs import panoramas_job

    document = panoramas_job(drive["poses"], drive["images"], drive["out"], points=[str(drive["points"])],
                             **OPTIONS)
    job = parse_job(document, drive["out"] / "panoramas.toml")

    def statuses() -> dict[str, str]:
        run = run_job(job, scheduler="threads", workers=1)
        assert run.report.ok, run.report.by_status("failed")
        return {k: o.status for k, o in run.report.outcomes.items()}

    first = statuses()
    colour_steps = [k for k in first if k.startswith("00-panoramas.colorize/")]
    assert colour_steps and all(first[k] == "done" for k in colour_steps)
    assert set(statuses().values()) == {"skipped"}
    names = _names(drive)
    image = drive["images"] / f"{names[0]}.jpg"
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF
    image.write_bytes(bytes(data))
    third = statuses()
    assert [k for k, v in third.items() if v == "done" and "panoramas.publish" in k] == \
        [f"02-panoramas.publish/{names[0]}", "02-panoramas.publish/finish"]
    assert all(third[k] == "done" for k in colour_steps)  # they read the new index
    assert third["partition/0000-mls"] == "skipped"
