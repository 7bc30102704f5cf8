"""The CLI's one error path, the OS faults that cannot be provoked safely in a test (a full disk, a read-only file
system, a permission denied for root), the disk-space guard, the lock and truncated images, in process.

Disk full and read-only are simulated by raising the OS error at the boundary (``run_job``) or by shrinking the
free space ``shutil.disk_usage`` reports: a real tiny tmpfs needs root mounts the test machines do not allow.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cim.errors import InputError
from tests.hostile.conftest import job_text


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run ``cim.cli.app.main`` in process; returns a function(*args) -> (exit code, stderr, stdout)."""
    from cim.cli import app

    before = list(logging.getLogger("cim").handlers)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["cim", *args])
        with pytest.raises(SystemExit) as exited:
            app.main()
        captured = capsys.readouterr()
        return int(exited.value.code or 0), captured.err, captured.out

    yield run
    for handler in logging.getLogger("cim").handlers:  # cim run leaves its log handler when it fails
        if handler not in before:
            logging.getLogger("cim").removeHandler(handler)
            handler.close()


@pytest.fixture
def job(points: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    path = tmp_path / "job.toml"
    path.write_text(job_text(out, points, job_extra='crs = "EPSG:7415"'))
    return path, out


def _raise(exc: BaseException):
    def fake(*args, **kwargs):
        raise exc
    return fake


@pytest.mark.parametrize(("exc", "says"), [
    (OSError(errno.ENOSPC, "No space left on device"), "out: disk full"),
    (OSError("197597 requested and 7680 written"), "(189,917 more bytes needed)"),
    (OSError(errno.EROFS, "Read-only file system", "/data/out/las/0_0.laz"), "/data/out/las/0_0.laz: read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/out/cim.log"), "/data/out/cim.log: permission denied"),
])
def test_os_errors_are_one_line(exc: OSError, says: str, job, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import cim.pipeline.execute

    monkeypatch.setattr(cim.pipeline.execute, "run_job", _raise(exc))
    code, err, _ = cli("run", str(job[0]), "--scheduler", "threads")
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err


def test_unexpected_error_points_to_the_log(job, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import cim.pipeline.execute

    monkeypatch.setattr(cim.pipeline.execute, "run_job", _raise(ZeroDivisionError("boom")))
    code, err, _ = cli("run", str(job[0]), "--scheduler", "threads")
    log = job[1] / "cim.log"
    assert code == 1 and "Traceback" not in err
    assert err.strip() == f"error: unexpected error (ZeroDivisionError: boom); the traceback is in {log}"
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError: boom" in text


def test_unexpected_error_without_a_log_goes_to_stderr(points: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import cim.info

    monkeypatch.setattr(cim.info, "file_info", _raise(KeyError("x")))
    code, err, _ = cli("info", str(points))
    assert code == 1
    assert "Traceback" in err and err.strip().splitlines()[-1].endswith("the traceback is above")


def test_disk_guard_refuses_before_work(job, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from cim import guards

    usage = shutil.disk_usage("/")
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    code, err, _ = cli("run", str(job[0]), "--scheduler", "threads")
    needed = 2000 * guards.BYTES_PER_POINT
    assert code == 2 and f"needs about {needed:,} bytes (2,000 points) but 1,000 bytes are free" in err
    assert not (job[1] / ".cim" / "parts").exists()


def test_task_os_error_is_described() -> None:
    from cim.runner.tasks import describe

    assert describe(OSError(errno.ENOSPC, "No space left on device")).startswith("disk full")
    assert describe(ValueError("x")) == "ValueError: x"


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    from cim import outlock

    held = outlock.acquire(tmp_path)
    assert outlock.acquire(tmp_path) is held  # the same process may ask again
    other = os.open(tmp_path / outlock.LOCK_NAME, os.O_RDWR)  # what a second process would do
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.release()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: free for the next run
    finally:
        os.close(other)
    assert json.loads((tmp_path / outlock.LOCK_NAME).read_text())["pid"] == os.getpid()


def test_lock_without_flock_trusts_the_recorded_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without flock, a live pid on this host holds the folder and a dead one is a stale lock."""
    import socket
    import subprocess

    from cim import outlock

    def no_flock(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(outlock.fcntl, "flock", no_flock)
    lock = tmp_path / outlock.LOCK_NAME
    lock.parent.mkdir()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        record = {"pid": alive.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
        lock.write_text(json.dumps(record))
        with pytest.raises(outlock.OutputLockedError, match=f"process {alive.pid} on .*delete {lock}"):
            outlock.acquire(tmp_path)
    finally:
        alive.kill()
        alive.wait()
    held = outlock.acquire(tmp_path)  # the recorded process is dead: stale, taken over
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    held.release()


# --- images -------------------------------------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path):
    from PIL import Image

    pixels = (np.random.default_rng(3).random((128, 256, 3)) * 255).astype(np.uint8)

    def make(suffix: str, keep: float = 1.0, trailer: bytes = b"") -> Path:
        path = tmp_path / f"pano{suffix}"
        Image.fromarray(pixels).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)] + trailer)
        return path

    return make


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_truncated_image_is_refused(suffix: str, image) -> None:
    from cim.panoramas.georef import check_complete

    check_complete(image(suffix))
    with pytest.raises(InputError, match=f"pano\\{suffix}: .*(truncated|decode completely)"):
        check_complete(image(suffix, keep=0.3))


def test_jpeg_with_a_long_trailer_passes(image) -> None:
    """Cameras append data after the end marker: the exact decode decides, not the marker's place."""
    from cim.panoramas.georef import check_complete

    check_complete(image(".jpg", trailer=b"INSTA360" * 2000))


@pytest.mark.parametrize(("lon", "lat", "code"), [(-74.0, 40.7, "EPSG:32618"), (151.2, -33.9, "EPSG:32756")])
def test_lat_lon_poses_outside_the_crs_suggest_one(lon: float, lat: float, code: str) -> None:
    """Poses in New York / Sydney with the default job CRS (ETRS89 / UTM 32N + DHHN2016, Germany only)."""
    import pyproj

    from cim.panoramas.georef import georeference
    from cim.panoramas.poses import PoseTable

    table = PoseTable(["p0"], [1.0e9], [[lon, lat, 30.0]], [[1.0, 0, 0, 0]], pyproj.CRS("EPSG:4979"),
                      source="poses.csv")
    with pytest.raises(InputError, match=f"poses.csv: panorama 'p0' cannot be placed .* --crs {code}"):
        georeference(table, "EPSG:25832+7837")


def test_summary_tells_cancelled_from_failed(points: Path, tmp_path: Path, cli, plugin_stages) -> None:
    """One tile fails: the summary shows 1 failed for that stage and the task it stopped (write.las of that tile)
    as cancelled, as report.json does (cancelled tasks used to be added to the failures)."""
    out = tmp_path / "out"
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, points, job_extra='crs = "EPSG:7415"',
                            extra='[[stages]]\ntype = "test.fail_on_tile"\ntile = "1700_8920"\n'))
    code, err, stdout = cli("run", str(job), "--scheduler", "threads", "--keep-going")
    assert code == 1, err
    cells = [[c.strip() for c in line.strip("│ ").split("│")]
             for line in stdout.splitlines() if line.startswith("│")]
    rows = {c[0]: c[1:] for c in cells}  # stage: done, skipped, failed, cancelled, seconds
    summary = json.loads((out / "report.json").read_text())
    assert [f["task"] for f in summary["failures"]] == ["00-test.fail_on_tile/1700_8920"]
    assert "synthetic failure" in summary["failures"][0]["error"]
    report = {row["stage"]: row for row in summary["stages"]}
    for stage in ("test.fail_on_tile", "write.las"):
        assert rows[stage][2:4] == [str(report[stage]["failed"]), str(report[stage]["cancelled"])], rows
    assert rows["test.fail_on_tile"][2:4] == ["1", "0"] and rows["write.las"][2:4] == ["0", "1"]


def test_a_stage_that_writes_nothing_is_an_error(points: Path, tmp_path: Path, cli, plugin_stages) -> None:
    """A stage with an output folder that wrote no data on any tile: exit 2 naming it, not an empty success."""
    out = tmp_path / "out"
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, points, job_extra='crs = "EPSG:7415"',
                            extra='[[stages]]\ntype = "test.silent"\n'))
    code, err, _ = cli("run", str(job), "--scheduler", "threads")
    assert code == 2 and err.strip() == f"error: {job}: stages[2] (test.silent) wrote no data on any tile; " \
                                        "check its inputs (e.g. footprints that meet no points)"


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 256 KiB tmpfs (needs the right to mount: root in a container); skips where mounting is not allowed."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); disk full is covered at the boundary above")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: the in-process run still holds its lock


def test_real_disk_full_fails_the_task_with_one_line(tiny_fs: Path, tmp_path: Path, cli,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk guard fooled (1 byte per point), the partition of 208,432 Delft points fills the 256 KiB file
    system: the task fails (exit 1) saying disk full and naming the file it was writing, and leaves no parts."""
    from cim import guards
    from tests.hostile.conftest import REPO

    monkeypatch.setattr(guards, "BYTES_PER_POINT", 1)
    out = tiny_fs / "out"
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, REPO / "data" / "delft" / "ahn3_cropped_2.laz", size=100.0,
                            job_extra='crs = "EPSG:7415"'))
    code, err, stdout = cli("run", str(job), "--scheduler", "threads")
    assert code == 1, err
    failed = [line for line in " ".join(stdout.split()).split("failed: ")[1:]]
    assert failed and failed[0].startswith("partition/0000-ahn3_cropped_2: ") and "Traceback" not in stdout + err
    (failure,) = json.loads((out / "report.json").read_text())["failures"]  # the terminal wraps long lines
    assert failure["error"].startswith(f"{out / '.cim' / 'parts'}/") and "disk full: no space left" in failure["error"]
    assert not list((out / ".cim" / "parts").iterdir()) and not (out / "las").exists()


def test_read_only_file_system_is_one_line(tmp_path: Path, points: Path, sandbox) -> None:
    """--out on a file system mounted read-only (a real EROFS): exit 2, one line, nothing written anywhere."""
    import subprocess

    from tests.hostile.conftest import assert_refused

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); read-only is covered at the boundary above")
    try:
        out = mount / "out"
        job = tmp_path / "job.toml"
        job.write_text(job_text(out, points))
        assert_refused(sandbox("run", str(job), out=out), f"{out}: read-only file system")
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)
