"""The partition of one large file on 1 and 2 workers, whole (one task) and by point ranges (issue 12, item 2).

    python -m benchmarks.partition_single --points 4e6 --repeat 3 --out benchmarks/results/partition_single.json

Generates one LAZ of N random points in strips (a flight line's order; 16 points/m², EPSG:25832+7837), then runs
``read.las`` -> ``tile`` (250 m) -> ``write.las`` through ``cim run`` with local worker processes, the file read
by one partition task (``task_points`` above the file) or by one task per chunk (1 M points by default), on 1
and 2 workers ("1 worker": one process, one thread everywhere; 2 workers: one thread each). Configurations
alternate round by round; medians count. Per run: wall and CPU seconds of the whole process tree (``probe``), the
partition phase's wall (first start to last end of its tasks in ``report.json``'s timeline) and its task seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import cim
from benchmarks.scale.jobs import ONE_THREAD, cim_command
from benchmarks.scale.probe import measure
from benchmarks.scale.run import _code, _load, _machine

DENSITY = 16.0
WHOLE = 10**12  # task_points above any file: one partition task


def make_file(path: Path, points: int) -> None:
    """``points`` random points over a square at :data:`DENSITY`, in 25 m strips along x (deterministic)."""
    side = (points / DENSITY) ** 0.5
    rng = np.random.default_rng(12)
    x, y = rng.uniform(0, side, points), rng.uniform(0, side, points)
    order = np.lexsort((x, np.floor(y / 25.0)))
    cloud = cim.PointCloud({"x": 500000 + x[order], "y": 5480000 + y[order], "z": rng.uniform(230, 260, points),
                            "intensity": rng.integers(0, 4000, points).astype("u2"),
                            "classification": rng.integers(1, 7, points).astype("u1"),
                            "gps_time": np.arange(points, dtype="f8") * 1e-5},
                           cim.crs.resolve("EPSG:25832+7837"))
    cim.write(path, cloud)


def job_toml(source: Path, task_points: int | None, chunk_size: int) -> str:
    return f"""[job]
name = "partition"
[[stages]]
type = "read.las"
files = ["{source.as_posix()}"]
chunk_size = {chunk_size}
{f"task_points = {task_points}" if task_points else ""}
[[stages]]
type = "tile"
size = 250.0
buffer = 0.0
[[stages]]
type = "write.las"
"""


def run_once(source: Path, mode: str, workers: int, chunk_size: int, scratch: Path) -> dict[str, Any]:
    folder = scratch / f"{mode}-w{workers}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    job = folder / "job.toml"
    job.write_text(job_toml(source, WHOLE if mode == "whole" else None, chunk_size))
    load = _load()[0]
    m = measure(cim_command(job, folder / "out", workers), env=ONE_THREAD, log=folder / "run.log")
    report = json.loads((folder / "out" / "report.json").read_text())
    parts = [t for t in report["timeline"]["tasks"] if t["stage"] == "tile"]
    sample = {**m.to_json(), "points": report["points"], "tiles": report["tiles"], "partition_tasks": len(parts),
              "partition_wall_s": round(max(t["end"] for t in parts) - min(t["start"] for t in parts), 3),
              "partition_task_s": round(sum(t["end"] - t["start"] for t in parts), 3),
              "load_average_1min_at_start": load}
    shutil.rmtree(folder)
    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=4e6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--chunk-size", type=int, default=1_000_000, help="points per chunk and per range task")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    configs = [(mode, w) for w in workers for mode in ("whole", "ranges")]
    scratch = Path(tempfile.mkdtemp(prefix="cim-partition-"))
    try:
        source = scratch / "single.laz"
        make_file(source, int(args.points))
        load_before = _load()
        samples: dict[str, list[dict[str, Any]]] = {f"{m}/w{w}": [] for m, w in configs}
        for _ in range(args.repeat):  # alternate configurations round by round
            for mode, w in configs:
                samples[f"{mode}/w{w}"].append(run_once(source, mode, w, args.chunk_size, scratch))
        result = {"machine": {**_machine(), "load_average_before": load_before, "load_average_after": _load()},
                  "code": _code(),
                  "input": {"points": int(args.points), "bytes": source.stat().st_size, "density_per_m2": DENSITY,
                            "kind": "random points in 25 m strips, one LAZ", "chunk_size": args.chunk_size},
                  "job": "read.las -> tile (250 m, no buffer) -> write.las",
                  "configs": {key: _summary(runs) for key, runs in samples.items()}}
        for w in workers:
            whole, ranges = result["configs"][f"whole/w{w}"], result["configs"][f"ranges/w{w}"]
            ranges["partition_speedup_vs_whole"] = round(whole["partition_wall_s"] / ranges["partition_wall_s"], 2)
        if 1 in workers and 2 in workers:
            for mode in ("whole", "ranges"):
                one, two = result["configs"][f"{mode}/w1"], result["configs"][f"{mode}/w2"]
                two["partition_speedup_vs_1_worker"] = round(one["partition_wall_s"] / two["partition_wall_s"], 2)
                two["job_speedup_vs_1_worker"] = round(one["wall_s"] / two["wall_s"], 2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        json.dump(result["configs"], sys.stdout, indent=1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "cpu_s", "partition_wall_s", "partition_task_s")
    return {**{k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
            **{f"{k}_all": [r[k] for r in runs] for k in keys},
            "partition_tasks": runs[0]["partition_tasks"], "tiles": runs[0]["tiles"], "points": runs[0]["points"],
            "worker_peak_rss_mb": max((r["worker_peak_rss_mb"] for r in runs), key=lambda v: max(v, default=0)),
            "load_average_1min_at_start": [r["load_average_1min_at_start"] for r in runs]}


if __name__ == "__main__":
    sys.exit(main())
