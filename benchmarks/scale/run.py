"""Run the scale benchmark: every (job, layout, workers) configuration, alternating, with the lazrs parallel
decode of the same files measured in every round, and summarise it (medians, speed-ups, rates, targets)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import laspy
import psutil

from benchmarks.bench_tiles import raw_decode
from benchmarks.scale.city import City, CitySpec, make_city
from benchmarks.scale.jobs import ONE_THREAD, cim_command, job_outcome, job_toml, py3dtiles_command
from benchmarks.scale.probe import folder_bytes, folder_files, measure

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("laspy", "lazrs", "dask", "distributed", "numpy", "scipy", "pyproj", "py3dtiles", "psutil")


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    tool: str  # "cim" or "py3dtiles"
    job: str
    layout: str  # "files" (M files) or "single" (the same points in one file)
    workers: int

    @property
    def key(self) -> str:
        return f"{self.job}/{self.layout}/{self.tool}/w{self.workers}"


def plan(jobs: list[str], workers: list[int], layouts: list[str], py3dtiles: list[int]) -> list[Config]:
    """Every job on the M files with every worker count; the single file with the most workers only; py3dtiles
    beside the tiles job with the worker counts ``py3dtiles`` names."""
    configs = []
    for job in jobs:
        for layout in layouts:
            counts = workers if layout == "files" else [max(workers)]
            for w in counts:
                configs.append(Config("cim", job, layout, w))
                if job == "tiles" and w in py3dtiles:
                    configs.append(Config("py3dtiles", job, layout, w))
    return configs


def run_benchmark(points: dict[str, int], files: int, jobs: list[str], workers: list[int], layouts: list[str],
                  repeat: int, long_s: float, py3dtiles: list[int], data: Path, gen_workers: int | None = None,
                  seed: int = 7, budget_s: float | None = None) -> dict[str, Any]:
    """Generate (or reuse) the cities, run every configuration ``repeat`` times (once when its first run took
    longer than ``long_s``), alternating, and return the results document. After the first round, no run
    starts once ``budget_s`` seconds have passed since the first one."""
    load_start = _load()
    cities, made = {}, {}
    for job in jobs:  # cities of equal size are generated once
        clock = time.perf_counter()
        cities[job] = make_city(CitySpec(points[job], files, seed), data, gen_workers, "single" in layouts)
        made[job] = round(time.perf_counter() - clock, 1)
    configs = plan(jobs, workers, layouts, py3dtiles)
    samples: dict[str, list[dict[str, Any]]] = {c.key: [] for c in configs}
    decodes: dict[str, list[dict[str, Any]]] = {}
    start = time.monotonic()

    def spent() -> bool:
        return budget_s is not None and time.monotonic() - start > budget_s

    with tempfile.TemporaryDirectory(prefix="cim-scale-", dir=data) as scratch:
        for round_ in range(repeat):
            if round_ and spent():
                break
            for name, city in _inputs(cities, layouts).items():  # the baseline, next to what it is compared with
                decodes.setdefault(name, []).append(raw_decode(city, laspy.LazBackend.LazrsParallel))
            for config in configs:
                done = samples[config.key]
                if round_ and (done[0]["wall_s"] > long_s or spent()):
                    continue
                done.append(_run(config, cities[config.job], Path(scratch)))
    result: dict[str, Any] = {
        "benchmark": "scale",
        "code": _code(),
        "machine": {**_machine(), "load_average_before": load_start, "load_average_after": _load()},
        "inputs": {job: city.facts for job, city in cities.items()},
        "generation_s": made,  # ~0 when the city was already there
        "options": {"files": files, "workers": workers, "jobs": jobs, "layouts": layouts, "repeat": repeat,
                    "long_s": long_s, "budget_s": budget_s, "py3dtiles_workers": py3dtiles,
                    "one_worker_env": ONE_THREAD},
        "decode_lazrs_parallel": {name: _median_decode(d) for name, d in decodes.items()},
    }
    result["configs"] = summarise(configs, samples, cities, result["decode_lazrs_parallel"])
    result["targets"] = targets(result["configs"], max(workers))
    return result


def _inputs(cities: dict[str, City], layouts: list[str]) -> dict[str, list[Path]]:
    """The file lists whose decode rate is measured: per city, its files and (when run) its single file."""
    named = {}
    for city in cities.values():
        name = city.folder.name
        if "files" in layouts:
            named[f"{name}/files"] = city.files
        if "single" in layouts:
            named[f"{name}/single"] = [city.single]
    return named


def _run(config: Config, city: City, scratch: Path) -> dict[str, Any]:
    """One measured run of ``config``; its output folder is removed afterwards."""
    files = city.files if config.layout == "files" else [city.single]
    folder = scratch / config.key.replace("/", "-")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "out"
    env = ONE_THREAD if config.workers == 1 else {}
    load = _load()[0]
    if config.tool == "cim":
        job_file = folder / "job.toml"
        job_file.write_text(job_toml(config.job, files, city.footprints))
        m = measure(cim_command(job_file, out, config.workers), env=env, cwd=REPO, log=folder / "run.log")
        sample = {**m.to_json(), **job_outcome(config.job, out), "work_bytes": folder_bytes(out / ".cim"),
                  "work_files": folder_files(out / ".cim")}
    else:
        m = measure(py3dtiles_command(files, out, config.workers), env=env, cwd=folder, log=folder / "run.log")
        sample = {**m.to_json(), "points": city.facts["points"]}
    sample["output_bytes"] = folder_bytes(out) - sample.get("work_bytes", 0)
    sample["load_average_1min_at_start"] = load
    shutil.rmtree(folder)
    return sample


def summarise(configs: list[Config], samples: dict[str, list[dict[str, Any]]], cities: dict[str, City],
              decode: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: medians of its runs, its rate against the decode of the same files, its speed-up
    over the 1-worker run and (tiles) over py3dtiles with as many workers."""
    out: dict[str, Any] = {}
    for c in configs:
        runs = samples[c.key]
        city = cities[c.job]
        wall = statistics.median(r["wall_s"] for r in runs)
        points = city.facts["points"]
        input_bytes = city.facts["bytes"] if c.layout == "files" else city.facts["single_bytes"]
        rate = points / wall
        entry = {
            "tool": c.tool, "job": c.job, "layout": c.layout, "workers": c.workers, "runs": len(runs),
            "wall_s": round(wall, 3), "wall_s_all": [r["wall_s"] for r in runs],
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "points": points, "points_per_s": round(rate),
            "rate_vs_lazrs_parallel_decode": round(rate / decode[f"{city.folder.name}/{c.layout}"]["points_per_s"], 4),
            "driver_peak_rss_mb": max(r["driver_peak_rss_mb"] for r in runs),
            "worker_peak_rss_mb": max(runs, key=lambda r: max(r["worker_peak_rss_mb"] or [0]))["worker_peak_rss_mb"],
            "tree_peak_rss_mb": max(r["tree_peak_rss_mb"] for r in runs),
            "output_bytes": runs[-1]["output_bytes"],
            "load_average_1min_at_start": [r["load_average_1min_at_start"] for r in runs],
        }
        if c.tool == "cim":
            last = runs[-1]
            entry.update(work_bytes=last["work_bytes"], work_vs_input=round(last["work_bytes"] / input_bytes, 2),
                         work_files=last["work_files"],
                         points_processed=last["points"], points_match_input=last["points"] == points,
                         tiles=last["tiles"], product_written=last["product"], stage_seconds=last["stage_seconds"],
                         stage_points_per_worker_s={s: round(points / v) for s, v in last["stage_seconds"].items()
                                                    if v > 0})
            if "buildings" in last:
                entry["buildings"] = last["buildings"]
                entry["buildings_in_footprints"] = city.facts["buildings"]
        out[c.key] = entry
    for c in configs:
        entry = out[c.key]
        one = out.get(Config(c.tool, c.job, c.layout, 1).key)
        if one and c.workers > 1:
            entry["speedup_vs_1_worker"] = round(one["wall_s"] / entry["wall_s"], 2)
        rival = out.get(Config("py3dtiles", c.job, c.layout, c.workers).key)
        if c.tool == "cim" and rival:
            entry["speed_vs_py3dtiles"] = round(rival["wall_s"] / entry["wall_s"], 2)
    return out


#: the issue's targets by worker count: (job, measure, at least / at most, value)
TARGETS = {
    2: [("terrain", "speedup_vs_1_worker", ">=", 1.8)],
    16: [("terrain", "speedup_vs_1_worker", ">=", 12.0), ("tiles", "rate_vs_lazrs_parallel_decode", ">=", 0.35),
         ("tiles", "speedup_vs_1_worker", ">=", 6.0)],
}


def targets(configs: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    """The issue's targets that this run's largest worker count can be held against, each with its figure."""
    rows = [(job, measure_, op, value) for job, measure_, op, value in TARGETS.get(workers, [])]
    rows += [(job, "work_vs_input", "<=", 1.5) for job in sorted({c["job"] for c in configs.values()})]
    found = []
    for job, measure_, op, value in rows:
        entry = configs.get(Config("cim", job, "files", workers).key, {})
        got = entry.get(measure_)
        if got is not None:
            found.append({"job": job, "workers": workers, "measure": measure_, "target": f"{op} {value}",
                          "measured": got, "met": got >= value if op == ">=" else got <= value})
    return found


def _median_decode(runs: list[dict[str, Any]]) -> dict[str, Any]:
    wall = statistics.median(r["seconds"] for r in runs)
    return {"points": runs[0]["points"], "wall_s": round(wall, 3), "points_per_s": round(runs[0]["points"] / wall),
            "wall_s_all": [r["seconds"] for r in runs]}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": {p: _version(p) for p in PACKAGES}}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _code() -> dict[str, Any]:
    """Which cim was measured: the commit of this checkout, the git tree of its cim/ folder (equal trees = the
    same code, whatever the benchmark commits around it) and whether cim/ has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    import cim

    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "cim_tree": git("rev-parse", "HEAD:cim"),
            "cim_modified": bool(git("status", "--porcelain", "--", "cim")), "cim_version": cim.__version__,
            "cim_path": str(Path(cim.__file__).parent)}
