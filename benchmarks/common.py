"""Shared benchmark plumbing: timing, peak memory of a process tree, result files."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def run_measured(argv: list[str], cwd: Path | None = None) -> dict[str, float]:
    """Run a command; return its wall time and the peak RSS of it and all its children (sampled)."""
    start = time.perf_counter()
    process = psutil.Popen(argv, cwd=cwd or REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {err.decode()[-2000:]}")
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak / 2**20}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine description."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                          "python": platform.python_version(),
                          "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}, **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def code_at(revision: str, into: Path) -> Path:
    """Extract the ``cim`` package of a git revision into ``into`` (a folder to put on PYTHONPATH)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", revision, "cim"], cwd=REPO, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def base_revision() -> str:
    """The revision to compare against: ``CIM_BENCH_BEFORE`` or where this branch left main."""
    return os.environ.get("CIM_BENCH_BEFORE") or subprocess.run(
        ["git", "merge-base", "HEAD", "main"], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def run_cim(code: Path, args: list[str], out: Path) -> dict[str, float]:
    """``python -m cim.cli ARGS`` with the package in ``code``: wall and CPU seconds (user + system of its processes)
    and the bytes of the job's work folder ``out/.cim``."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cim.cli", *args], cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = os.times()
    work = sum(p.stat().st_size for p in (out / ".cim").rglob("*") if p.is_file())
    return {"wall_s": time.perf_counter() - start,
            "cpu_s": (after.children_user - before.children_user) + (after.children_system - before.children_system),
            "work_bytes": work}


def product_digests(out: Path) -> dict[str, str]:
    """SHA-256 of every product under ``out`` (the work folder, dot-files, report and log left out)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)
            and p.name not in ("cim.log", "report.json")}


def medians(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per label, the median of each measured quantity over its runs."""
    return {label: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} for label, rs in runs.items()}
