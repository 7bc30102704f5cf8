"""The fixed start-up cost of every command: what ``import cim``, ``cim --help`` and a ``--scheduler threads`` job
import, and the thread pool that replaces an in-process Dask cluster for that scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import laspy
import pytest

from cim.runner import Dep, Manifest, Task, run_tasks
from cim.runner.cluster import ThreadClient
from tests.helpers import REPO

#: Modules no command needs at start: each costs 0.05-0.5 s to import (Dask and distributed 0.45 s together).
HEAVY = ("distributed", "dask", "open3d", "rasterio", "pyvista", "cv2", "scipy", "lxml", "shapely", "pystac",
         "pyogrio", "PIL", "trimesh", "tornado", "psutil", "zstandard", "pydantic")

_IMPORTED = "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"


def _imported(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running ``code``."""
    done = subprocess.run([sys.executable, "-c", f"{code}\n{_IMPORTED}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_cim_imports_no_heavy_module() -> None:
    imported = _imported("import cim")
    assert "cim" in imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_cim_help_imports_no_heavy_module() -> None:
    code = ("import contextlib, io, sys\nsys.argv = ['cim', '--help']\nfrom cim.cli.app import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n    main()\n"
            "assert 'tiles' in out.getvalue() and 'run' in out.getvalue(), out.getvalue()")
    imported = _imported(code)
    assert {"typer", "cim"} <= imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_a_threads_job_imports_neither_dask_nor_distributed(tmp_path: Path) -> None:
    small = tmp_path / "small.laz"
    with laspy.open(REPO / "data" / "delft" / "ahn3_cropped_2.laz") as reader:
        points = reader.read_points(5000)
        with laspy.open(small, mode="w", header=reader.header) as writer:
            writer.write_points(points)
    out = tmp_path / "out"
    code = (f"import sys\nsys.argv = ['cim', 'tiles', {str(small)!r}, '--out', {str(out)!r}, '--crs', 'EPSG:7415', "
            "'--scheduler', 'threads', '--workers', '2']\nfrom cim.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code")
    imported = _imported(code)
    assert json.loads((out / "report.json").read_text())["points"] == 5000  # the job ran
    assert imported.isdisjoint({"dask", "distributed", "tornado"}), sorted(imported & {"dask", "distributed"})


# ----------------------------------------------------------------------------------------------- ThreadClient


def _add(*values: int) -> int:
    return sum(values)


def _fail(message: str) -> int:
    raise ValueError(message)


def _slow(value: int, seconds: float) -> int:
    time.sleep(seconds)
    return value


def _tasks(steps: dict[str, tuple]) -> list[Task]:
    return [Task(key, "s", fn, args, fingerprint=key) for key, (fn, *args) in steps.items()]


def test_thread_client_runs_a_graph_in_dependency_order(tmp_path: Path) -> None:
    # a diamond and a chain: every value is checked against the sums worked out by hand
    graph = {"a": (_add, 1), "b": (_add, Dep("a"), 10), "c": (_add, Dep("a"), 100), "d": (_add, Dep("b"), Dep("c")),
             "e": (_slow, 7, 0.05), "f": (_add, Dep("e"), Dep("d"), 1000)}
    client = ThreadClient(2)
    try:
        report = run_tasks(_tasks(graph), client, Manifest(tmp_path / "m.jsonl"))
    finally:
        client.close()
    assert report.ok
    assert {k: o.result for k, o in report.outcomes.items()} == {"a": 1, "b": 11, "c": 101, "d": 112, "e": 7,
                                                                  "f": 1119}
    assert client.nthreads() == {"threads": 2}
    for key in "bcdf":  # started after what it waited for had ended
        outcome = report.outcomes[key]
        assert all(outcome.started >= report.outcomes[d].started + report.outcomes[d].seconds - 1e-3
                   for d in outcome.deps)


def test_thread_client_reports_a_failure_and_its_dependents(tmp_path: Path) -> None:
    graph = {"ok": (_add, 1), "bad": (_fail, "broken input"), "after": (_add, Dep("bad"), 1),
             "later": (_add, Dep("after"), Dep("ok")), "free": (_add, Dep("ok"), 2)}
    client = ThreadClient(2)
    try:
        report = run_tasks(_tasks(graph), client, Manifest(tmp_path / "m.jsonl"), keep_going=True)
    finally:
        client.close()
    status = {k: (o.status, o.error) for k, o in report.outcomes.items()}
    assert status["bad"] == ("failed", "ValueError: broken input")
    assert status["after"] == ("cancelled", "an upstream task failed")
    assert status["later"] == ("cancelled", "an upstream task failed")
    assert status["ok"][0] == status["free"][0] == "done" and report.outcomes["free"].result == 3


def test_thread_client_stops_after_a_failure_without_keep_going(tmp_path: Path) -> None:
    # one thread: the failing task runs first, the slow ones wait in the queue and are cancelled
    graph = {"bad": (_fail, "stop"), **{f"slow{i}": (_slow, i, 0.2) for i in range(5)}}
    client = ThreadClient(1)
    started = time.perf_counter()
    try:
        report = run_tasks(_tasks(graph), client, Manifest(tmp_path / "m.jsonl"))
    finally:
        client.close()
    assert time.perf_counter() - started < 0.5  # at most one slow task ran
    assert report.outcomes["bad"].status == "failed"
    assert sum(o.status == "cancelled" for o in report.outcomes.values()) >= 4
    assert not report.ok


def test_thread_client_runs_tasks_in_parallel_threads(tmp_path: Path) -> None:
    seen: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(3, timeout=10)  # passes only when three tasks run at the same time

    def meet(value: int) -> int:
        barrier.wait()
        with lock:
            seen.add(threading.get_ident())
        return value

    client = ThreadClient(3)
    try:
        futures = [client.submit(meet, i, key=f"t{i}") for i in range(3)]
        assert [f.result(timeout=20) for f in futures] == [0, 1, 2]
    finally:
        client.close()
    assert len(seen) == 3 and all(f.status == "finished" for f in futures)


def test_the_threads_scheduler_gets_a_thread_client(tmp_path: Path) -> None:
    from cim.runner.cluster import dask_client

    import numpy as np

    with dask_client("threads", 2, tmp_path / "dask") as client:
        assert isinstance(client, ThreadClient) and client.nthreads() == {"threads": 2}
        assert not np._core.multiarray._get_madvise_hugepage()  # as in worker processes


# ------------------------------------------------------------------------------------------- worker processes


def _worker_facts() -> tuple[int, str | None, str | None, bool, int, bool]:
    import numpy as np

    return (os.getppid(), os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("OPENBLAS_NUM_THREADS"),
            "cim.pipeline.execute" in sys.modules, hash("cim"), np._core.multiarray._get_madvise_hugepage())


def test_local_workers_are_forked_from_a_server_that_imported_the_runner(tmp_path: Path) -> None:
    import multiprocessing

    import psutil

    from cim.runner.cluster import PRELOAD, dask_client

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform: workers are spawned")
    with dask_client(None, 2, tmp_path / "dask") as client:
        facts = list(client.run(_worker_facts).values())
    assert len(facts) == 2 and facts[0] == facts[1]  # one parent, the same environment and hash seed
    parent, mmap_threshold, blas_threads, preloaded, _, huge_pages = facts[0]
    assert not huge_pages  # numpy asks for no transparent huge pages (cluster.no_huge_pages)
    assert parent != os.getpid()  # the fork server, not this process
    assert "cim.pipeline.execute" in PRELOAD and preloaded
    assert mmap_threshold == str(64 * 2**20) and blas_threads == "1"  # Dask's pre-spawn environment, cim's malloc
    server = psutil.Process(parent)
    assert server.num_threads() == 1  # it forks: no thread may exist (OpenBLAS starts its pool at import)
    environ = server.environ()  # what it started with, before numpy and glibc's malloc read it
    assert environ["OPENBLAS_NUM_THREADS"] == "1" and environ["MALLOC_MMAP_THRESHOLD_"] == str(64 * 2**20)


_TEARDOWN = """
import cim.runner.forkserver_exit

class Finalized:
    def __del__(self):
        print("torn down", flush=True)

kept = Finalized()  # a module global: finalized by the interpreter's teardown
print("ran", flush=False)
"""


def test_the_fork_server_ends_without_the_interpreter_teardown() -> None:
    """The fork server ends at once when the driver does: a caller reading the driver's output to its end waited
    for the server's teardown (~0.15 s), since the server holds the driver's standard streams. Its output is
    still flushed."""
    from cim.runner.cluster import PRELOAD

    assert PRELOAD[-1] == "cim.runner.forkserver_exit"
    done = subprocess.run([sys.executable, "-c", _TEARDOWN], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.split() == ["ran"], done


def test_worker_environment_without_dask_config_is_dasks_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no Dask configuration of the user's can change it, the server starts with Dask's pre-spawn
    environment (and cim's malloc settings) without importing Dask: the same as read through Dask's config."""
    from cim.runner import cluster

    for name in [n for n in os.environ if n.startswith("DASK_") or n in cluster.worker_environ()]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(cluster, "_dask_configured", lambda: False)
    fast = cluster.worker_environ()
    monkeypatch.setattr(cluster, "_dask_configured", lambda: True)
    assert cluster.worker_environ() == fast
    assert fast["OMP_NUM_THREADS"] == "1" and fast["MALLOC_MMAP_THRESHOLD_"] == str(cluster.HEAP_PAD)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    assert cluster.worker_environ()["OMP_NUM_THREADS"] == "3"


_STAGE_PRELOAD = """
import sys
from pathlib import Path

from cim.cli.jobs import start_workers_early
from cim.runner.cluster import dask_client

def imported():
    return sorted(m for m in ("cim.stages.terrain", "rasterio", "cim.stages.buildings") if m in sys.modules)

if __name__ == "__main__":
    start_workers_early(None, ["read.las", "filter.ground", "raster.dtm"])
    with dask_client(None, 1, Path(sys.argv[1])) as client:
        print(list(client.run(imported).values())[0])
"""


def test_the_fork_server_imports_the_job_stage_modules(tmp_path: Path) -> None:
    """Workers start with the modules of the job's stages (and theirs) imported, and only those: the fork server
    imported them once, so no worker imports them before its first task."""
    import multiprocessing

    from cim.pipeline.stage import lookup, stage_module, stage_names

    assert all(stage_module(name) == lookup(name).__module__ for name in stage_names())
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform: workers are spawned")
    script = tmp_path / "preload.py"
    script.write_text(_STAGE_PRELOAD)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "dask")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip().splitlines()[-1] == "['cim.stages.terrain', 'rasterio']"


_FAULTS = """
import resource, sys
from pathlib import Path
import numpy as np
from cim.runner.cluster import dask_client

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):  # what a tile step does: columns of a few MB made, filtered, freed
        a = np.ones(2_000_000); b = a * 2; c = b[b > 1].copy(); del a, b, c
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

faults()
before = faults()
with dask_client("threads", 1, Path(sys.argv[1])):
    faults()
    print(before, faults())
"""


def test_the_threads_scheduler_keeps_freed_columns_in_the_heap(tmp_path: Path) -> None:
    """With glibc's defaults every freed column of a few MB is unmapped and the next is faulted in page by page;
    the threads scheduler, whose tasks run in this process, keeps them as worker processes do."""
    import platform

    if platform.system() != "Linux":
        pytest.skip("glibc's malloc only")
    script = tmp_path / "faults.py"
    script.write_text(_FAULTS)
    glibc_defaults = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # as a user's shell
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True, env={**glibc_defaults, "PYTHONPATH": str(REPO)})
    before, after = map(int, done.stdout.split())
    assert before > 10_000 and after < before / 20, (before, after)


# ------------------------------------------------------------------------- the fork server started before validation


def test_declared_stage_names_read_an_unvalidated_document() -> None:
    from cim.pipeline.job import declared_stage_names

    assert declared_stage_names({"stages": [{"type": "read.las"}, {"type": 3}, "x", {"size": 1}, {"type": "tile"}]}) \
        == ["read.las", "tile"]
    assert declared_stage_names({"stages": {"type": "tile"}}) == [] and declared_stage_names({}) == []


def test_a_refused_job_exits_2_and_leaves_no_fork_server(tmp_path: Path) -> None:
    """``cim run`` starts the workers' fork server while it validates the job: a job refused then still ends with
    one line and exit 2, and the server goes with the process."""
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "x"\noutput = "out"\n\n[[stages]]\ntype = "read.las"\nfiles = ["a.laz"]\n\n'
                   '[[stages]]\ntype = "filter.outliers"\nneighbours = "many"\n', encoding="utf-8")
    before = _fork_servers()
    done = subprocess.run([sys.executable, "-m", "cim.cli", "run", str(job)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "stages[1]" in done.stderr + done.stdout
    deadline = time.monotonic() + 10
    while _fork_servers() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _fork_servers() - before
    assert not (tmp_path / "out").exists()


def _fork_servers() -> set[int]:
    """The processes running a multiprocessing fork server now."""
    found = subprocess.run(["pgrep", "-f", "multiprocessing.forkserver"], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}
