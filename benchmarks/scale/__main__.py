"""Command line of the scale benchmark (see docs/scale.md).

    python -m benchmarks.scale --points 16e6 --files 16 --workers 1,2 --jobs tiles,terrain,buildings \\
        --out benchmarks/results/scale_2core.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.scale.jobs import JOBS
from benchmarks.scale.plan import billion_point_plan
from benchmarks.scale.run import run_benchmark
from cim.fileutil import write_text_atomic


def _count(text: str) -> int:
    value = float(text)
    if value < 1000 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of points, at least 1000 (e.g. 16e6)")
    return int(value)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in JOBS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown job {', '.join(unknown) or repr(text)} (jobs: {', '.join(JOBS)})")
    return names


def _workers(text: str) -> list[int]:
    try:
        counts = sorted({int(v) for v in text.split(",")})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: worker counts like 1,2 or 1,4,16")
    return counts


def _layouts(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or set(names) - {"files", "single"}:
        raise argparse.ArgumentTypeError(f"{text!r}: layouts are files and/or single")
    return names


def _job_points(text: str) -> tuple[str, int]:
    job, _, count = text.partition("=")
    return _names(job)[0], _count(count)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    p.add_argument("--points", type=_count, default=_count("4e6"), help="points of the generated city (e.g. 16e6)")
    p.add_argument("--job-points", type=_job_points, action="append", default=[], metavar="JOB=N",
                   help="another size for one job, e.g. tiles=64e6 (repeatable)")
    p.add_argument("--files", type=int, default=16, help="LAZ files the city is split into")
    p.add_argument("--workers", type=_workers, default=[1, 2], help="worker counts, e.g. 1,4,16")
    p.add_argument("--jobs", type=_names, default=list(JOBS), help="of tiles,terrain,buildings")
    p.add_argument("--layouts", type=_layouts, default=["files", "single"],
                   help="files (M files, every worker count) and/or single (one file, the most workers)")
    p.add_argument("--repeat", type=int, default=3, help="alternating rounds; the median counts")
    p.add_argument("--long", type=float, default=120.0, dest="long_s",
                   help="a configuration whose first run took longer than this (s) is run once")
    p.add_argument("--budget", type=float, default=None, dest="budget_s",
                   help="seconds after which no further round starts (the first round always runs whole)")
    p.add_argument("--py3dtiles-workers", type=_workers, default=None,
                   help="worker counts of the py3dtiles runs beside the tiles job (default: those of --workers)")
    p.add_argument("--no-py3dtiles", action="store_true", help="skip py3dtiles beside the tiles job")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "cim-bench-scale",
                   help="where generated cities are kept (reused by later runs) and jobs write")
    p.add_argument("--gen-workers", type=int, default=None, help="processes generating the city (default: cores)")
    p.add_argument("--out", type=Path, required=True, help="results JSON, e.g. benchmarks/results/scale_2core.json")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    if args.files < 1 or args.repeat < 1:
        parser().error("--files and --repeat must be at least 1")
    points = {job: args.points for job in args.jobs} | dict(args.job_points)
    args.data.mkdir(parents=True, exist_ok=True)
    py3dtiles = [] if args.no_py3dtiles else args.py3dtiles_workers or args.workers
    result = run_benchmark(points, args.files, args.jobs, args.workers, args.layouts, args.repeat, args.long_s,
                           py3dtiles, args.data, args.gen_workers, budget_s=args.budget_s)
    result["billion_point_plan"] = billion_point_plan(result)
    write_text_atomic(args.out, json.dumps(result, indent=1, sort_keys=True) + "\n")
    for key, entry in result["configs"].items():
        extra = {k: entry[k] for k in ("speedup_vs_1_worker", "speed_vs_py3dtiles", "work_vs_input") if k in entry}
        print(f"{key:34s} {entry['wall_s']:8.2f} s  {entry['points_per_s']:>10,} pts/s  "
              f"{entry['rate_vs_lazrs_parallel_decode']:.3f} of decode  {extra}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
