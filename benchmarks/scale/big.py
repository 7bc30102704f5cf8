"""One end-to-end run of the terrain job over a city of hundreds of millions of generated points (issue 12: "one
local run of >= 200 M points on this 2-core machine, with its numbers").

Generating 200 M points with :mod:`cim.synth` costs CPU hours, so a base block of the scale benchmark's city
(``--base`` points in ``--files`` files) is generated once and laid out again and again in a near-square grid of
blocks until ``--points`` are reached: every copy is shifted by whole block edges and lifted by the regional slope
over that shift, so neighbouring blocks join like the tiles inside one block (same terrain slope, streets on the
block edges). The copies are written in parallel processes, chunk by chunk (memory bounded by the chunk).

    python -m benchmarks.scale.big --points 200e6 --workers 2 --data /work/bigcity \\
        --out benchmarks/results/scale_200m_terrain.json

The run is measured once (it is long; this is a scale record, not a speed comparison): wall and CPU time, peak
RSS per worker, input / work-folder / product bytes, the job's per-stage seconds and the stage and task counts of
its report.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import laspy
import numpy as np

from benchmarks.scale.city import CitySpec, make_city
from benchmarks.scale.jobs import cim_command, job_outcome, job_toml
from benchmarks.scale.probe import folder_bytes, folder_files, measure
from benchmarks.scale.run import REPO, _code, _load, _machine
from cim.fileutil import atomic_write, write_text_atomic
from cim.runner.timeline import serial_seconds


def block_grid(copies: int) -> tuple[int, int]:
    """(rows, cols) of the most nearly square grid holding at least ``copies`` blocks."""
    cols = math.ceil(math.sqrt(copies))
    return math.ceil(copies / cols), cols


def _copy(job: tuple[str, str, float, float, float]) -> int:
    """Write ``source`` shifted by (dx, dy, dz) to ``target``; returns its point count."""
    source, target, dx, dy, dz = job
    with laspy.open(source) as reader:
        header = reader.header
        header.offsets = header.offsets + np.array([dx, dy, dz])
        with atomic_write(Path(target)) as tmp, laspy.open(tmp, mode="w", header=header) as writer:
            for points in reader.chunk_iterator(1_000_000):
                out = laspy.ScaleAwarePointRecord(points.array.copy(), header.point_format, header.scales,
                                                  header.offsets)  # same integers, shifted offsets
                writer.write_points(out)
    return header.point_count


def replicate(base: list[Path], block: tuple[float, float], slope: tuple[float, float], copies: int, folder: Path,
              workers: int) -> list[Path]:
    """``copies`` shifted copies of the block of ``base`` files (edges ``block`` in x, y) under ``folder``."""
    rows, cols = block_grid(copies)
    jobs, targets = [], []
    for k in range(copies):
        r, c = divmod(k, cols)
        dx, dy = c * block[0], r * block[1]
        for f in base:
            target = folder / f"b{r:02d}{c:02d}_{f.name}"
            targets.append(target)
            if not target.exists():
                jobs.append((str(f), str(target), dx, dy, slope[0] * dx + slope[1] * dy))
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_copy, jobs, chunksize=4))
    return targets


def timeline_facts(report: dict[str, Any]) -> dict[str, Any]:
    """What the job's timeline says about parallelism: serial and idle shares, the stages that ran alone longest,
    when the partition ended and the slowest finish steps."""
    tasks = report["timeline"]["tasks"]
    wall = max(t["end"] for t in tasks)
    serial, idle = serial_seconds(tasks)
    finishes = [t for t in tasks if t["task"].endswith("/finish") or t["task"] == "catalog"]
    return {"wall_s": round(wall, 1), "serial_share": round(sum(serial.values()) / wall, 4),
            "idle_share": round(idle / wall, 4),
            "alone_s_by_stage": {k: round(v, 1) for k, v in sorted(serial.items(), key=lambda kv: -kv[1])[:6]},
            "partition_end_s": round(max(t["end"] for t in tasks if t["stage"] == "tile"), 1),
            "finish_s": {t["task"]: round(t["end"] - t["start"], 2) for t in finishes}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from cim.synth import SynthConfig

    p = argparse.ArgumentParser(prog="python -m benchmarks.scale.big", description=__doc__.splitlines()[0])
    p.add_argument("--points", type=float, default=200e6, help="points of the whole city (at least)")
    p.add_argument("--base", type=float, default=4e6, help="points of the generated base block")
    p.add_argument("--files", type=int, default=16, help="files of the base block")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers of the terrain job")
    p.add_argument("--data", type=Path, required=True, help="folder for the city and the job (needs ~2.5x input)")
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    args = p.parse_args(argv)
    load_start = _load()
    clock = time.perf_counter()
    city = make_city(CitySpec(int(args.base), args.files), args.data, single=False)
    generated = time.perf_counter() - clock
    rows, cols = city.facts["grid"]
    edge = city.facts["tile_extent_m"]
    copies = math.ceil(args.points / city.facts["points"])
    clock = time.perf_counter()
    files = replicate(city.files, (cols * edge, rows * edge), SynthConfig().slope, copies, args.data / "copies",
                      os.cpu_count() or 1)
    replicated = time.perf_counter() - clock
    points = sum(laspy.open(f).header.point_count for f in files)
    input_bytes = sum(f.stat().st_size for f in files)
    folder = args.data / "terrain"
    folder.mkdir(exist_ok=True)
    job_file = folder / "job.toml"
    job_file.write_text(job_toml("terrain", files, city.footprints))
    out = folder / "out"
    m = measure(cim_command(job_file, out, args.workers), cwd=REPO, log=folder / "run.log")
    report = json.loads((out / "report.json").read_text())
    work = folder_bytes(out / ".cim")
    result = {
        "benchmark": "scale-big-terrain",
        "code": _code(),
        "machine": {**_machine(), "load_average_before": load_start, "load_average_after": _load()},
        "base_block": city.facts,
        "copies": copies, "block_grid": list(block_grid(copies)), "files": len(files), "points": points,
        "area_km2": round(copies * city.facts["area_m2"] / 1e6, 2),
        "generation_s": round(generated, 1), "replication_s": round(replicated, 1),
        "workers": args.workers,
        "run": m.to_json(),
        "points_per_s": round(points / m.wall_s),
        "cpu_us_per_point": round(m.cpu_s / points * 1e6, 2),
        "job": job_outcome("terrain", out),
        "tasks": len(report["timeline"]["tasks"]),
        "timeline": timeline_facts(report),
        "input_bytes": input_bytes,
        "work_bytes": work, "work_files": folder_files(out / ".cim"),
        "work_vs_input": round(work / input_bytes, 3),
        "product_bytes": folder_bytes(out) - work,
    }
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "base_block", "code")}, indent=1))
    return result


if __name__ == "__main__":
    main()
