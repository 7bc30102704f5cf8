"""Peak memory is bounded by the tile size, not the input size (measured, in separate processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, write_job

POINTS = 10_000_000
EXTENT = 800.0  # metres; tiles of 200 m -> 16 tiles of ~625k points (plus slivers from rounding at the edge)

MAKE_INPUT = f"""
import numpy as np, cim
rng = np.random.default_rng(0)
n = {POINTS}
cloud = cim.PointCloud({{
    "x": 500000 + rng.uniform(0, {EXTENT}, n), "y": 5480000 + rng.uniform(0, {EXTENT}, n),
    "z": rng.uniform(230, 260, n), "intensity": rng.integers(0, 4000, n).astype("u2"),
    "classification": rng.integers(1, 7, n).astype("u1"), "gps_time": np.sort(rng.uniform(0, 900, n)),
}}, cim.crs.resolve("EPSG:25832+7837"))
cim.write(r"{{path}}", cloud)
"""

# Imports are done first and the kernel's peak-RSS mark is reset after them (/proc/self/clear_refs "5"), so
# the figure is the memory the body itself needed, not the libraries' import-time transients.
PEAK = """
import sys, runpy
import cim, cim.cli.app, cim.pipeline.execute, cim.pipeline.stage, distributed
cim.pipeline.stage.registry()
def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    sys.exit(77)
start = status("VmRSS:")
sys.argv = {argv!r}
try:
    {body}
finally:
    print("PEAK_KB", status("VmHWM:") - start, file=sys.stderr)
"""


def _peak_kb(argv: list[str], body: str) -> int:
    """Peak resident memory (kB) that ``body`` needs above the imported libraries, in a fresh interpreter."""
    code = PEAK.format(argv=argv, body=body)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=900)
    if result.returncode == 77:
        pytest.skip("this kernel does not let a process reset its peak-RSS mark (/proc/self/clear_refs)")
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stderr.rsplit("PEAK_KB", 1)[1].split()[0])


def test_tiled_run_peak_memory_is_bounded_by_tile_not_input_size(tmp_path: Path) -> None:
    source = tmp_path / "big.las"
    subprocess.run([sys.executable, "-c", MAKE_INPUT.replace("{path}", str(source))], cwd=REPO, check=True,
                   timeout=900)
    job = write_job(tmp_path / "job.toml", f"""
[job]
output = "{(tmp_path / 'out').as_posix()}"
[[stages]]
type = "read.las"
files = ["{source.as_posix()}"]
chunk_size = 500000
[[stages]]
type = "tile"
size = 200.0
buffer = 5.0
[[stages]]
type = "write.las"
""")
    whole = _peak_kb(["cim"], f"c = cim.read(r'{source}')")
    tiled = _peak_kb(["cim", "run", str(job), "--scheduler", "threads", "--workers", "1"],
                     "runpy.run_module('cim.cli', run_name='__main__')")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ok"] and report["points"] == POINTS
    assert len(list((tmp_path / "out" / "las").glob("*.laz"))) == report["tiles"] >= 16
    whole_mb, tiled_mb = whole / 1024, tiled / 1024
    print(f"peak above imports: whole-file read {whole_mb:.0f} MB, tiled run {tiled_mb:.0f} MB")
    assert whole_mb > 300  # the input (10 M points, ~280 MB of records) really is large compared with a tile
    assert tiled_mb < 0.4 * whole_mb
