"""Driver memory per planned task, without running the job: the terrain pipeline planned over N tiles and F input
files laid out on a grid; the plan's traced Python memory, the pickled arguments of its tasks and the driver's
resident memory once Dask holds them (submitted to a one-worker local cluster with a no-op in place of the task
functions, so nothing is computed).

``python -m benchmarks.scale.plan_memory --tiles 1024 4096 --files 16 784`` prints one line per case. ``--old``
gives every chain task all part folders, as cim did before a tile's load read only its neighbourhood's.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import cim
from cim.pipeline.execute import WORK, _Plan
from cim.pipeline.job import load_job
from cim.pipeline.shared import shared_strings
from cim.pipeline.stage import JobContext
from cim.runner import Manifest
from cim.runner.fingerprints import CodeHashes, ContentHashes
from cim.tiling import TileGrid, neighbourhood

JOB = Path(__file__).resolve().parents[2] / "pipelines" / "terrain-delft.toml"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def _noop(*args: Any) -> int:
    return 0


def plan_arguments(folder: Path, tiles: int, files: int, old: bool) -> tuple[Any, ...]:
    """What :class:`_Plan` is given for the terrain job over ``tiles`` tiles (a square) and ``files`` inputs (a
    square grid of them), with the parts of every input written in ``folder``."""
    job = load_job(JOB, {"output": str(folder / "out")})
    grid = TileGrid(100.0, 30.0)
    side, per_side = int(tiles ** 0.5), max(1, int(files ** 0.5))
    grid_tiles = [grid.tile(ix, iy) for iy in range(side) for ix in range(side)]
    work = folder / "out" / WORK
    folders = [str(work / "parts" / f"{i:04d}-aerial_{i:04d}") for i in range(files)]
    home: dict[str, list[str]] = {}  # tile key -> the folders of the input over it
    for i, f in enumerate(folders):
        home.setdefault(f"{(i % per_side) * side // per_side}_{(i // per_side) * side // per_side}", []).append(f)
    parts = {t.key: folders if old else [f for k in neighbourhood(t) for f in home.get(k, [])] for t in grid_tiles}
    inputs = tuple(f"/data/city/block_{i:04d}/aerial_{i:04d}.laz" for i in range(files))
    context = JobContext(job.name, folder / "out", cim.crs.resolve("EPSG:7415"), grid,
                         inputs=inputs if old else shared_strings(work / "inputs.json", inputs))
    for stage in job.stages:
        stage.plan(context)
    work.mkdir(parents=True, exist_ok=True)
    return (job, context, grid_tiles, (parts, {}), [f"fp{i}" for i in range(files)], Manifest(work / "m.jsonl"),
            ContentHashes(work / "hashes.json"), CodeHashes(), True)


def measure(tiles: int, files: int, old: bool) -> str:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        arguments = plan_arguments(Path(tmp), tiles, files, old)
        gc.collect()
        tracemalloc.start()
        planned = _Plan(*arguments)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] / 2**20
        tracemalloc.stop()
        pickled = sum(len(pickle.dumps(t.args)) for t in planned.tasks) / 2**20
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            before = _rss_mb()
            futures = [client.submit(_noop, *t.args, pure=False) for t in planned.tasks]
            client.gather(futures)
            held = _rss_mb() - before
    n = len(planned.tasks)
    return (f"{'old' if old else 'new'}: {tiles} tiles, {files} files: {n} tasks; plan {traced:.1f} MB traced "
            f"({traced * 1024 / n:.1f} KB/task), arguments {pickled:.1f} MB pickled ({pickled * 1024 / n:.1f} "
            f"KB/task), driver +{held:.0f} MB while Dask holds them ({held * 1024 / n:.0f} KB/task)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--files", type=int, nargs="+", default=[16, 784])
    parser.add_argument("--old", action="store_true")
    parser.add_argument("--one", action="store_true", help="measure the first case here (each case runs so)")
    parser.add_argument("--save", action="store_true", help="also write benchmarks/results/plan_memory[_old].json")
    args = parser.parse_args()
    if args.one:
        print(measure(args.tiles[0], args.files[0], args.old), flush=True)
        return
    lines = []
    for files in args.files:
        for tiles in args.tiles:  # each case in a fresh process: resident memory is not given back between cases
            done = subprocess.run([sys.executable, "-m", "benchmarks.scale.plan_memory", "--one", "--tiles",
                                   str(tiles), "--files", str(files), *(["--old"] if args.old else [])],
                                  check=True, capture_output=True, text=True)
            print(done.stdout, end="", flush=True)
            lines.append(done.stdout.strip())
    if args.save:
        from benchmarks.common import write_result

        write_result("plan_memory" + ("_old" if args.old else ""), {"benchmark": "plan_memory", "cases": lines})


if __name__ == "__main__":
    main()
