"""Point clouds to 3D Tiles: cim vs py3dtiles vs raw lazrs decode, same input, same run.

Measures wall time, CPU time, points per second, peak resident memory of the whole process tree (children
included, sampled with psutil) and output size (also with ``--meshopt``), with the 1-minute load average at the
start of every run: the machine is shared, so only ratios within one run mean anything. The configurations
alternate round by round, in an order rotated each round (:func:`rotated`), and the median of the rounds counts
(every run is kept). Input: the four BC Timber Sales
LAZ tiles of ../shared/data, unmodified (2.83 M points, EPSG:3005; ``--copies 3``: three copies side by side,
8.5 M points); both tilers write ECEF-placed 3D Tiles (py3dtiles ``--srs_out 4978``). An existing result file's
runs are kept in the new one's ``history``.

    .venv/bin/python benchmarks/bench_tiles.py                                   # -> results/tiles.json
    .venv/bin/python benchmarks/bench_tiles.py --copies 3 --repeat 3 --out benchmarks/results/tiles_8m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import laspy

try:
    from benchmarks.common import RESULTS, SHARED, run_measured
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import RESULTS, SHARED, run_measured

DATA = SHARED / "bcts"
BIN = Path(sys.executable).parent


def measure(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS of the process tree (benchmarks.common), plus its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = run_measured(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(m["seconds"], 3), "cpu_seconds": round(cpu, 3), "peak_rss_mb": round(m["peak_rss_mb"], 1)}


def folder_bytes(path: Path, skip: tuple[str, ...] = (".cim", "stac")) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not any(part in skip for part in p.relative_to(path).parts):
            total += p.stat().st_size
    return total


def raw_decode(files: list[Path], backend: laspy.LazBackend) -> dict:
    start = time.perf_counter()
    cpu0 = time.process_time()
    n = 0
    for f in files:
        with laspy.open(f, laz_backend=backend) as reader:
            for chunk in reader.chunk_iterator(1_000_000):
                n += len(chunk)
                _ = chunk.x, chunk.y, chunk.z  # scaled coordinates, as a tiler needs them
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "points": n,
            "points_per_s": round(n / seconds)}


def replicate(files: list[Path], copies: int, folder: Path) -> list[Path]:
    """``copies`` shifted copies of every input (copy k moved 250 m * k east), as LAZ files in ``folder``."""
    out = []
    for f in files:
        las = laspy.read(f)
        for k in range(copies):
            shifted = laspy.LasData(las.header, las.points.copy())
            shifted.x = las.x + 250.0 * k
            path = folder / f"{f.stem}_{k}.laz"
            shifted.write(path)
            out.append(path)
    return out


def tiny_input(source: Path, folder: Path, n: int = 10_000) -> Path:
    """The first ``n`` points of ``source`` as a LAZ file: a run on it measures a tool's fixed start-up cost."""
    with laspy.open(source) as reader:
        points = reader.read_points(n)
        las = laspy.LasData(reader.header, points)
    path = folder / "tiny.laz"
    las.write(path)
    return path


def summarize(runs: dict, startup: dict) -> dict:
    """Ratios of the medians: ``cim tiles`` with the threads scheduler (and with processes) to py3dtiles and to
    the raw decode."""
    cim, base, decode = runs["cim_threads"], runs["py3dtiles"], runs["raw_decode_lazrs"]
    return {
        "speed_vs_py3dtiles": round(base["seconds"] / cim["seconds"], 2),
        "speed_vs_py3dtiles_processes": round(base["seconds"] / runs["cim_processes"]["seconds"], 2),
        "cpu_efficiency_vs_py3dtiles": round(base["cpu_seconds"] / cim["cpu_seconds"], 2),
        "cpu_efficiency_vs_py3dtiles_processes": round(base["cpu_seconds"] / runs["cim_processes"]["cpu_seconds"], 2),
        "cpu_efficiency_beyond_startup_vs_py3dtiles": round(
            base["cpu_seconds"] / (cim["cpu_seconds"] - startup["cpu_seconds"]), 2),
        "peak_memory_vs_py3dtiles": round(cim["peak_rss_mb"] / base["peak_rss_mb"], 2),
        "peak_memory_vs_py3dtiles_processes": round(runs["cim_processes"]["peak_rss_mb"] / base["peak_rss_mb"], 2),
        "rate_vs_raw_decode_lazrs": round(decode["seconds"] / cim["seconds"], 3),
        "cpu_rate_vs_raw_decode_lazrs": round(decode["cpu_seconds"] / cim["cpu_seconds"], 3),
        "rate_vs_raw_decode_lazrs_parallel": round(runs["raw_decode_lazrs_parallel"]["seconds"] / cim["seconds"], 3),
        "cim_cpu_us_per_point": round(cim["cpu_seconds"] / decode["points"] * 1e6, 3),
        "cim_startup": {k: startup[k] for k in ("seconds", "cpu_seconds", "peak_rss_mb")},
        "meshopt_output_vs_plain": round(runs["cim_threads_meshopt"]["output_mb"] / cim["output_mb"], 3),
        "meshopt_time_vs_plain": round(runs["cim_threads_meshopt"]["seconds"] / cim["seconds"], 2),
        "meshopt_cpu_vs_plain": round(runs["cim_threads_meshopt"]["cpu_seconds"] / cim["cpu_seconds"], 2),
        "targets": "issue 12: speed >= 3x py3dtiles --jobs 2 on the original bcts files (2 cores); earlier: "
                   "memory <= 0.5x py3dtiles, rate >= 0.5x raw decode",
    }


def median_run(runs: list[dict]) -> dict:
    """The median wall and CPU seconds (and peak memory) of ``runs``, with every run's figures and load."""
    out = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0] if isinstance(runs[0][k], float)}
    for key in ("output_mb", "intermediate_mb", "points"):
        if key in runs[0]:
            out[key] = runs[-1][key]
    out["all_seconds"] = [r["seconds"] for r in runs]
    out["all_cpu_seconds"] = [r["cpu_seconds"] for r in runs]
    if "load_average_1min_at_start" in runs[0]:
        out["all_load_average_1min_at_start"] = [r["load_average_1min_at_start"] for r in runs]
    return out


def code_version() -> dict:
    """The commit of the checkout and whether ``cim/`` differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                              text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "cim_modified": bool(git("status", "--porcelain", "--", "cim"))}


def compile_cim() -> str:
    """Compile the bytecode of the cim package that ``cim`` runs (as a wheel install ships it): without it, an
    editable install under ``PYTHONDONTWRITEBYTECODE=1`` compiles cim's sources in every run (~0.07 CPU s of
    start-up), which py3dtiles, installed with its bytecode, never pays. Returns the package folder."""
    script = ("import compileall, pathlib, cim; p = pathlib.Path(cim.__file__).parent; "
              "compileall.compile_dir(p, quiet=1); print(p)")
    done = subprocess.run([str(BIN / "python"), "-c", script], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def history(path: Path) -> list[dict]:
    """The results an earlier run left in ``path`` (its own history first), to be kept in the new file."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    return [*old.pop("history", []), old]


def rotated(items: list, by: int) -> list:
    """``items`` starting at ``by`` (modulo their number): each round runs the tools in another order, so that no
    tool always runs right after the same one. A run right after py3dtiles took ~0.5 s more system time (cim
    threads on bcts: 0.97 s against 0.41 s, 4 pairs; not removed by ``sync`` and a pause), and cim's threads run
    always came after it."""
    return items[by % len(items):] + items[:by % len(items)]


def cim_tiles(files: list[Path], out: Path, scheduler: str, workers: int, *extra: str) -> list[str]:
    """The ``cim tiles`` command line of a run (EPSG:3005 input, no final check)."""
    return [str(BIN / "cim"), "tiles", *map(str, files), "--out", str(out), "--crs", "EPSG:3005", "--no-check",
            "--scheduler", scheduler, "--workers", str(workers), *extra]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "tiles.json"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; configurations alternate, the median counts")
    parser.add_argument("--copies", type=int, default=1,
                        help="replicate the input side by side (shifted 250 m east per copy) for a bigger run")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] if __name__ == "__main__" else [])
    files = sorted(DATA.glob("*.laz"))
    if not files:
        sys.exit(f"no input: {DATA} is missing")
    scratch = tempfile.TemporaryDirectory()
    if args.copies > 1:
        files = replicate(files, args.copies, Path(scratch.name))
    points = sum(laspy.open(f).header.point_count for f in files)
    tiny = tiny_input(files[0], Path(scratch.name))
    results: dict = {
        "input": {"files": [f.name for f in files], "points": points, "crs": "EPSG:3005",
                  "copies": args.copies},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(v, 2) for v in os.getloadavg()]},
        "code": {**code_version(), "bytecode_compiled": compile_cim()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.repeat,
        "runs": {},
    }
    tools = {
        "py3dtiles": lambda out: [str(BIN / "py3dtiles"), "convert", *map(str, files), "--out", str(out),
                                  "--overwrite", "--srs_in", "3005", "--srs_out", "4978", "--jobs", str(args.workers),
                                  "--spec-version", "1.1"],
        "cim_threads": lambda out: cim_tiles(files, out, "threads", args.workers),
        # fixed cost (imports, Dask cluster, job planning): the same command on 10,000 points
        "cim_threads_startup": lambda out: cim_tiles([tiny], out, "threads", args.workers),
        "cim_processes": lambda out: cim_tiles(files, out, "processes", args.workers),
        "cim_threads_meshopt": lambda out: cim_tiles(files, out, "threads", args.workers, "--meshopt"),
    }
    every: dict[str, list[dict]] = {}
    for round_number in range(args.repeat):
        for label, backend in (("raw_decode_lazrs", laspy.LazBackend.Lazrs),
                               ("raw_decode_lazrs_parallel", laspy.LazBackend.LazrsParallel)):
            every.setdefault(label, []).append(raw_decode(files, backend))
        for label, command in rotated(list(tools.items()), round_number):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / label
                load = round(os.getloadavg()[0], 2)
                m = measure(command(out))
                m["load_average_1min_at_start"] = load
                m["output_mb"] = round(folder_bytes(out) / 2**20, 2)
                if label.startswith("cim"):
                    m["intermediate_mb"] = round(folder_bytes(out / ".cim", skip=()) / 2**20, 2)
            every.setdefault(label, []).append(m)
    runs = results["runs"]
    runs.update({label: median_run(ms) for label, ms in every.items()})
    tiny_points = runs.pop("cim_threads_startup")
    for run in runs.values():
        run["points_per_s"] = round(points / run["seconds"])
        run["points_per_cpu_s"] = round(points / run["cpu_seconds"])
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["summary"] = summarize(runs, tiny_points)
    results["history"] = history(Path(args.out))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
