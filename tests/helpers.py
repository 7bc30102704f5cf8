"""Small helpers shared by the pipeline tests."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Folder of the test plug-in package (``cim_test_stages`` and its ``.dist-info``).
PLUGINS = REPO / "tests" / "plugins"


def cim_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the ``cim`` command in a subprocess (same interpreter), capturing its output."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cim.cli", *args], cwd=cwd or REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def write_job(path: Path, body: str) -> Path:
    """Write a TOML job file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def tiling_job(path: Path, out: Path, files: str | Path, *, size: float, buffer: float, read: str = "",
               write: str = "") -> Path:
    """A job file at ``path``: ``files`` (a path or a glob) read, tiled, written back as LAS tiles into ``out``;
    ``read`` and ``write``: more option lines of those stages."""
    return write_job(path, f"""
[job]
output = "{Path(out).as_posix()}"
[[stages]]
type = "read.las"
files = ["{Path(files).as_posix()}"]
{read}
[[stages]]
type = "tile"
size = {size}
buffer = {buffer}
[[stages]]
type = "write.las"
{write}
""")


def product_digests(out_dir: Path) -> dict[str, str]:
    """SHA-256 of every product file (hidden work folders, the log and the report excluded)."""
    digests = {}
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.name not in (
                "cim.log", "report.json"):
            digests[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def delft_job(out: Path, *, size: float = 100.0, buffer: float = 10.0, extra: str = "",
              files: str | None = None, name: str = "t", crs: str | None = "EPSG:7415", job_extra: str = "") -> str:
    """A job: read.las, tile, ``extra`` stages, write.las, over the shipped Delft tiles (or over ``files``, a path
    or pattern of points in ``crs``; ``crs=None`` leaves the CRS to the files); ``job_extra``: more [job] keys."""
    files = files or f"{(REPO / 'data' / 'delft').as_posix()}/ahn3_cropped_*.laz"
    job = "\n".join([f'name = "{name}"', f'output = "{out.as_posix()}"'] + ([f'crs = "{crs}"'] if crs else [])
                    + ([job_extra] if job_extra else []))
    return f"""
[job]
{job}

[[stages]]
type = "read.las"
files = ["{files}"]

[[stages]]
type = "tile"
size = {size}
buffer = {buffer}
{extra}
[[stages]]
type = "write.las"
"""


def ground_dsm_stages(resolution: float) -> str:
    """Stages for :func:`delft_job`'s ``extra``: a point-modifying stage (classify.ground) and a raster with a
    finish (raster.dsm)."""
    return f"""
[[stages]]
type = "classify.ground"
mode = "always"

[[stages]]
type = "raster.dsm"
resolution = {resolution}
"""


def gps_seconds(las) -> "np.ndarray":
    """A laspy record's GPS time in GPS seconds, honouring the adjusted-standard bit of the header."""
    import laspy
    import numpy as np

    from cim.io.las import ADJUSTED_GPS_OFFSET

    adjusted = las.header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD
    return np.asarray(las.gps_time, dtype=float) + (ADJUSTED_GPS_OFFSET if adjusted else 0.0)


def checkout_stage_table() -> dict[str, str]:
    """The ``cim.stages`` entry points this checkout's pyproject.toml declares (name -> "module:Class")."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["entry-points"]["cim.stages"]


def write_dist_info(folder: Path, name: str, stages: dict[str, str]) -> Path:
    """A minimal ``<name>-0.dist-info`` in ``folder`` registering ``stages`` (what pip would install)."""
    dist = folder / f"{name.replace('-', '_')}-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[cim.stages]\n" + "".join(f"{k} = {v}\n" for k, v in stages.items()))
    return dist


def prepend_path(folder: Path) -> None:
    """Put ``folder`` first on this process's import path and on the PYTHONPATH of its subprocesses."""
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))


def stale_stage_metadata() -> bool:
    """True when the installed cim metadata lacks some stage of the checkout's table (an editable install made
    before the table changed: only re-installing refreshes entry points)."""
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="cim.stages")}
    return any(installed.get(k) != v for k, v in checkout_stage_table().items())
