"""Small helpers shared by the pipeline tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
              files: str | None = None) -> str:
    """A job over the shipped Delft tiles (or over ``files``, a path or pattern of Delft points: EPSG:7415)."""
    files = files or f"{(REPO / 'data' / 'delft').as_posix()}/ahn3_cropped_*.laz"
    return f"""
[job]
name = "t"
output = "{out.as_posix()}"
crs = "EPSG:7415"

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


def gps_seconds(las) -> "np.ndarray":
    """A laspy record's GPS time in GPS seconds, honouring the adjusted-standard bit of the header."""
    import laspy
    import numpy as np

    from cim.io.las import ADJUSTED_GPS_OFFSET

    adjusted = las.header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD
    return np.asarray(las.gps_time, dtype=float) + (ADJUSTED_GPS_OFFSET if adjusted else 0.0)
