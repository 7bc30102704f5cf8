"""The hostile-input corpus: small bad files generated per test, and a CLI runner that checks nothing leaks.

Every case runs ``cim`` in a subprocess whose working directory, ``$HOME`` and ``$TMPDIR`` are fresh folders, so
that a file written anywhere but ``--out`` is seen.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import delft_job

REPO = Path(__file__).resolve().parents[2]

#: Byte offsets in a LAS 1.4 header (ASPRS LAS 1.4 R15, table 3).
SCALE_AT, OFFSET_AT, MAXX_AT, MINX_AT, POINT_COUNT_AT, LEGACY_COUNT_AT = 131, 155, 179, 187, 247, 107


@dataclass
class CliResult:
    """A finished ``cim`` run and the files it left outside its output folder."""

    returncode: int
    stdout: str
    stderr: str
    strays: list[str]

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def _snapshot(folders: list[Path], out: Path | None) -> set[str]:
    files = set()
    for folder in folders:
        for path in folder.rglob("*"):
            if out is not None and (path == out or out in path.parents or path in out.parents):
                continue  # --out, what is inside it, and the folders made to hold it
            files.add(str(path))
    return files


@pytest.fixture
def sandbox(tmp_path: Path):
    """Run ``cim`` with its own cwd, HOME and TMPDIR; returns a function(args, out=None) -> CliResult."""
    cwd, home, tmp = tmp_path / "cwd", tmp_path / "home", tmp_path / "tmpdir"
    for folder in (cwd, home, tmp):
        folder.mkdir()
    watched = [tmp_path]  # cwd, HOME, TMPDIR and the data all live here; --out is left out

    def run(*args: str, out: Path | None = None, timeout: float = 120) -> CliResult:
        before = _snapshot(watched, out)
        env = {**os.environ, "COLUMNS": "200", "HOME": str(home), "TMPDIR": str(tmp),
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run([sys.executable, "-m", "cim.cli", *args], cwd=cwd, env=env, text=True,
                              capture_output=True, timeout=timeout)
        strays = sorted(_snapshot(watched, out) - before)
        return CliResult(done.returncode, done.stdout, done.stderr, strays)

    return run


def assert_refused(result: CliResult, *names: str, code: int = 2) -> str:
    """Exit ``code``, one ``error:`` line naming every one of ``names``, no traceback, nothing outside --out."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(result.errors) == 1, result.stderr
    line = result.errors[0]
    message = result.stderr[result.stderr.index(line):]  # the line, and a job file's further problems under it
    for name in names:
        assert name in message, (name, message)
    assert not result.strays, result.strays
    return line


def assert_no_products(out: Path) -> None:
    """Nothing in the output folder that looks like a product (only the log, the lock and work files)."""
    if not out.exists():
        return
    found = [p.relative_to(out).as_posix() for p in out.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)]
    assert set(found) <= {"cim.log"}, found


def write_points(path: Path, n: int = 2000, seed: int = 1, origin: tuple[float, float] = (85_000.0, 446_000.0),
                 extent: float = 60.0, crs: str = "EPSG:7415") -> Path:
    """A small point cloud (ground and a box building) at ``origin`` written with cim's writer (LAS or LAZ)."""
    from cim.crs import resolve
    from cim.io import las
    from cim.points import PointCloud

    rng = np.random.default_rng(seed)
    x = origin[0] + rng.uniform(0, extent, n)
    y = origin[1] + rng.uniform(0, extent, n)
    roof = (np.abs(x - origin[0] - extent / 2) < 8) & (np.abs(y - origin[1] - extent / 2) < 8)
    z = np.where(roof, 10.0, 0.0) + rng.normal(0, 0.02, n)
    data = {"x": x, "y": y, "z": z, "classification": np.where(roof, 6, 2).astype(np.uint8),
            "return_number": np.ones(n, np.uint8), "number_of_returns": np.ones(n, np.uint8)}
    las.write(path, PointCloud(data, resolve(crs)), scale=0.01)
    return path


def patch(path: Path, at: int, fmt: str, *values: float | int) -> Path:
    """Overwrite header bytes of ``path`` at byte ``at`` with ``values`` packed little-endian as ``fmt``."""
    raw = bytearray(path.read_bytes())
    packed = struct.pack("<" + fmt, *values)
    raw[at:at + len(packed)] = packed
    path.write_bytes(bytes(raw))
    return path


def job_text(out: Path, files: Path | str, *, size: float = 50.0, buffer: float = 5.0, extra: str = "",
             job_extra: str = "") -> str:
    """A job named "hostile": read.las of ``files`` (the CRS theirs), tile, ``extra`` stages, write.las."""
    return delft_job(Path(out), size=size, buffer=buffer, extra=extra, files=Path(files).as_posix(), name="hostile",
                     crs=None, job_extra=job_extra)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def points(data_dir: Path) -> Path:
    """A good uncompressed LAS (EPSG:7415, Delft) of 2,000 points."""
    return write_points(data_dir / "points.las")
