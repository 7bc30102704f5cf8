"""The demo job (pipelines/demo.toml) with this checkout's code against a git revision's (environment variable
``CIM_BENCH_BEFORE``, default: where this branch left main): work-folder bytes, wall and CPU time, 3 alternating
runs each, medians, and whether the products are byte-identical. ``python -m benchmarks io_demo``."""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, write_result

RUNS = 3


def _digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)
            and p.name not in ("cim.log", "report.json")}


def _run(code: Path, out: Path) -> dict[str, float]:
    """One demo run from ``code`` (a folder holding the cim package) into ``out``: wall and CPU seconds."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cim.cli", "run", str(REPO / "pipelines" / "demo.toml"), "--out", str(out),
                    "--workers", "2"], cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = os.times()
    work = sum(p.stat().st_size for p in (out / ".cim").rglob("*") if p.is_file())
    return {"wall_s": time.perf_counter() - start,
            "cpu_s": (after.children_user - before.children_user) + (after.children_system - before.children_system),
            "work_bytes": work}


def main() -> None:
    revision = os.environ.get("CIM_BENCH_BEFORE") or subprocess.run(
        ["git", "merge-base", "HEAD", "main"], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    laz = sum(p.stat().st_size for p in (REPO / "data" / "delft").glob("ahn3_cropped_*.laz"))
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "archive", revision, "cim"], cwd=REPO, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        digests: dict[str, dict[str, str]] = {}
        for i in range(RUNS):  # alternating, so that load from elsewhere hits both alike
            for label, code in (("before", old), ("after", REPO)):
                out = Path(tmp) / f"{label}{i}"
                runs[label].append(_run(code, out))
                digests[label] = _digests(out)
    median: dict[str, Any] = {label: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
                              for label, rs in runs.items()}
    write_result("pipeline_core", {
        "job": "pipelines/demo.toml (Delft, 848,942 points, 9 tiles of 100 m, 2 local workers)",
        "before_revision": revision,
        "input_laz_bytes": laz,
        "median": median,
        "work_folder_ratio_to_laz": {label: round(m["work_bytes"] / laz, 2) for label, m in median.items()},
        "runs": {label: [{k: round(v, 3) for k, v in r.items()} for r in rs] for label, rs in runs.items()},
        "products": len(digests["after"]),
        "products_identical": digests["before"] == digests["after"],
        "note": "wall and CPU of the whole `cim run` (interpreter and Dask start-up included; CPU = user + system "
                "of the run's processes). The machine is shared: compare the alternating runs, not other files.",
    })
