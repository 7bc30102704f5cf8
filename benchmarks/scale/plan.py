"""Extrapolate a scale-benchmark result to a billion points: CPU hours, wall time on one 16-core machine and on
N such nodes, disk (input, work folder, products), memory per worker and the shared file system's bandwidth.

The model is linear in the points (every heavy step is per tile; the finish steps are not modelled: read their
share from the run's timeline) and uses only figures of the result it is given:

* CPU seconds per point of each job = median CPU seconds of the whole process tree / points (at the largest
  worker count, start-up included, so small runs overstate it);
* parallel efficiency = speed-up over 1 worker / workers, at the largest worker count measured; the 16-core
  and cluster walls are given at that efficiency and at the ideal one;
* bytes per point of the input, the work folder and the products, as the run left them;
* memory per worker = the largest worker's peak: bounded by the tile when the pipeline holds its promise.

    python -m benchmarks.scale.plan benchmarks/results/scale_2core.json [--points 1e9] [--nodes 4,16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CORES_PER_NODE = 16


def billion_point_plan(result: dict[str, Any], points: float = 1e9, nodes: tuple[int, ...] = (1, 4, 16)
                       ) -> dict[str, Any]:
    """The extrapolation of ``result`` (a results document of ``python -m benchmarks.scale``) to ``points``."""
    configs = [c for c in result["configs"].values() if c["tool"] == "cim" and c["layout"] == "files"]
    plan: dict[str, Any] = {"points": points, "cores_per_node": CORES_PER_NODE, "code": result.get("code"),
                            "measured_on": {k: result["machine"].get(k) for k in ("nproc", "cpu_model")},
                            "jobs": {}}
    for job in sorted({c["job"] for c in configs}):
        runs = sorted((c for c in configs if c["job"] == job), key=lambda c: c["workers"])
        top = runs[-1]
        n = top["points"]
        cpu_per_point = top["cpu_s"] / n
        measured = "speedup_vs_1_worker" in top  # else only one worker count ran: the ideal is all there is
        efficiency = top["speedup_vs_1_worker"] / top["workers"] if measured else 1.0
        cpu_hours = cpu_per_point * points / 3600
        input_bytes = result["inputs"][job]["bytes"] / n
        entry = {
            "measured_points": n, "measured_workers": top["workers"],
            "cpu_us_per_point": round(cpu_per_point * 1e6, 3), "parallel_efficiency": round(efficiency, 3),
            "efficiency_measured": measured,
            "cpu_hours": round(cpu_hours, 2),
            "wall_hours": {f"{k}x{CORES_PER_NODE}": {
                "ideal": round(cpu_hours / (k * CORES_PER_NODE), 3),
                "at_measured_efficiency": round(cpu_hours / (k * CORES_PER_NODE * max(efficiency, 1e-3)), 3)}
                for k in nodes},
            "disk_gb": {"input": round(input_bytes * points / 1e9, 1),
                        "work_folder": round(top["work_bytes"] / n * points / 1e9, 1),
                        "products": round(top["output_bytes"] / n * points / 1e9, 1)},
            "peak_rss_mb_per_worker": max(top["worker_peak_rss_mb"] or [0.0]),
            "node_memory_gb_at_16_workers": round(max(top["worker_peak_rss_mb"] or [0.0]) * CORES_PER_NODE / 1024, 1),
            "tiles_measured": top["tiles"],
        }
        # every byte of input is read once, the work folder written and read back once, the products written once
        per_point = input_bytes + 2 * top["work_bytes"] / n + top["output_bytes"] / n
        node_rate = CORES_PER_NODE * max(efficiency, 1e-3) / cpu_per_point  # points/s of one node
        entry["shared_fs_mb_per_s"] = {f"{k}x{CORES_PER_NODE}": round(per_point * node_rate * k / 1e6)
                                       for k in nodes}
        plan["jobs"][job] = entry
    return plan


def markdown(plan: dict[str, Any]) -> str:
    """The plan as a Markdown table (one row per job)."""
    keys = list(next(iter(plan["jobs"].values()))["wall_hours"]) if plan["jobs"] else []
    head = ["job", "µs CPU/pt", "eff.", "CPU h", *[f"wall h {k}" for k in keys], "input GB", "work GB",
            "products GB", "MB/worker", *[f"FS MB/s {k}" for k in keys]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for job, e in plan["jobs"].items():
        walls = [f"{e['wall_hours'][k]['at_measured_efficiency']} ({e['wall_hours'][k]['ideal']})" for k in keys]
        cells = [job, e["cpu_us_per_point"], e["parallel_efficiency"], e["cpu_hours"], *walls,
                 e["disk_gb"]["input"], e["disk_gb"]["work_folder"], e["disk_gb"]["products"],
                 e["peak_rss_mb_per_worker"], *[e["shared_fs_mb_per_s"][k] for k in keys]]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale.plan", description=__doc__.splitlines()[0])
    p.add_argument("result", type=Path, help="results JSON of python -m benchmarks.scale")
    p.add_argument("--points", type=float, default=1e9)
    p.add_argument("--nodes", default="1,4,16", help="cluster sizes (nodes of 16 cores)")
    args = p.parse_args(argv)
    if not args.result.is_file():
        p.exit(2, f"{args.result}: no such results file\n")
    plan = billion_point_plan(json.loads(args.result.read_text()), args.points,
                              tuple(int(v) for v in args.nodes.split(",")))
    sys.stdout.write(markdown(plan))


if __name__ == "__main__":
    main()
