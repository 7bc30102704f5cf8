"""Run a command and measure it: wall and CPU seconds, peak RSS of the driver and of every worker process.

Workers are the command's descendant processes (Dask's nanny workers, py3dtiles' process pool) that live at
least half a second, other than ``multiprocessing``'s helpers; each one's peak is sampled with psutil every
50 ms. CPU seconds are the user + system time of the whole process tree: of the reaped tree
(``RUSAGE_CHILDREN``), or of the last samples of every process when that is more (workers their parent never
reaps, as py3dtiles' pool, are missing from the first; the last 50 ms of each process from the second).
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.05
WORKER_SAMPLES = 10  # a spawned descendant seen fewer times (0.5 s) is a passing helper, not a worker


@dataclass
class Measured:
    """What :func:`measure` saw of one run."""

    wall_s: float
    cpu_s: float
    driver_peak_rss_mb: float
    worker_peak_rss_mb: list[float] = field(default_factory=list)  # one per worker process, largest first
    tree_peak_rss_mb: float = 0.0  # the peak of the sum over the whole tree at one sample

    def to_json(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "driver_peak_rss_mb": round(self.driver_peak_rss_mb, 1),
                "worker_peak_rss_mb": [round(v, 1) for v in self.worker_peak_rss_mb],
                "tree_peak_rss_mb": round(self.tree_peak_rss_mb, 1)}


class CommandFailed(RuntimeError):
    """The measured command exited with a non-zero status."""


#: descendants that are not workers: multiprocessing's resource tracker and fork server
HELPERS = ("resource_tracker", "forkserver")


def _is_worker(pid: int, cmdlines: dict[int, str], parents: dict[int, int], seen: dict[int, int]) -> bool:
    """Whether descendant ``pid`` is a worker: forked from the fork server (a fork keeps the server's command line;
    however short its life), or not a helper and seen for :data:`WORKER_SAMPLES` samples."""
    if "forkserver" in cmdlines[pid]:
        return "forkserver" in cmdlines.get(parents.get(pid, -1), "")
    return not any(h in cmdlines[pid] for h in HELPERS) and seen[pid] >= WORKER_SAMPLES


def measure(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            log: Path | None = None) -> Measured:
    """Run ``argv`` (``env`` added to this process's environment) and measure it; raise on failure, with the
    tail of its output (written in full to ``log`` when given)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        process = psutil.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=output,
                               stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
        peaks: dict[int, int] = {}
        cmdlines: dict[int, str] = {}  # the last seen: a child is a fork of its parent until it execs
        parents: dict[int, int] = {}
        seen: dict[int, int] = {}
        cpu: dict[int, float] = {}
        tree_peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal tree_peak
            while not stop.is_set():
                total = 0
                try:
                    children = process.children(recursive=True)
                except psutil.Error:
                    children = []
                for p in [process, *children]:
                    try:
                        rss = p.memory_info().rss
                        times = p.cpu_times()
                        cpu[p.pid] = times.user + times.system
                        if p is not process:
                            cmdlines[p.pid] = " ".join(p.cmdline())
                            parents[p.pid] = p.ppid()
                            seen[p.pid] = seen.get(p.pid, 0) + 1
                    except psutil.Error:
                        continue
                    peaks[p.pid] = max(peaks.get(p.pid, 0), rss)
                    total += rss
                tree_peak = max(tree_peak, total)
                time.sleep(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        stop.set()
        sampler.join()
    finally:
        if log:
            output.close()
    wall = time.perf_counter() - start
    if code != 0:
        tail = log.read_bytes()[-3000:].decode(errors="replace") if log else ""
        raise CommandFailed(f"{' '.join(argv[:4])} ... exited with {code}: {tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    mb = 2 ** 20
    return Measured(wall, max(reaped, sum(cpu.values())), peaks.get(process.pid, 0) / mb,
                    sorted((peaks[p] / mb for p in cmdlines if _is_worker(p, cmdlines, parents, seen)), reverse=True),
                    tree_peak / mb)


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def folder_files(path: Path) -> int:
    """Number of files under ``path`` (a shared file system's metadata load)."""
    return sum(1 for p in path.rglob("*") if p.is_file()) if path.exists() else 0
