"""Dask clients: a local cluster by default, an existing one by address, a pool of threads in this process for the
``threads`` scheduler; the shared-storage check."""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from cim.errors import CimError
from cim.threads import limited

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("cim.runner")


def is_remote(scheduler: str | None) -> bool:
    """Whether ``scheduler`` names an existing cluster (whose workers may run on other machines)."""
    return bool(scheduler) and scheduler not in ("local", "threads")


class ThreadFuture(Future):
    """A task of :class:`ThreadClient`: a :class:`~concurrent.futures.Future` with the ``key`` and ``status`` of a
    Dask future."""

    def __init__(self, key: str, deps: list[ThreadFuture]) -> None:
        super().__init__()
        self.key = key
        self.deps = deps

    @property
    def status(self) -> str:
        """"pending", "finished", "error" or "cancelled", as Dask says."""
        if self.cancelled():
            return "cancelled"
        if not self.done():
            return "pending"
        return "error" if self.exception() is not None else "finished"


class ThreadClient:
    """What cim's runner asks of a Dask client (submit with dependencies, cancel, nthreads), done by a pool of
    threads in this process: the ``threads`` scheduler without Dask's scheduler, worker and their imports.

    A task starts when the futures among its arguments have finished, with their results in their place; it is
    cancelled when one of them failed or was cancelled (it then reports that upstream failure, as Dask does)."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._share = max(1, (os.cpu_count() or 1) // threads)  # the cores a task's native code may use
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="cim-task")

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, pure: bool = False,
               priority: int = 0) -> ThreadFuture:
        """Run ``fn(*args)`` once the futures among ``args`` have finished (``pure`` and ``priority`` are Dask's,
        ignored: ready tasks start in the order they were submitted, which is the runner's priority order)."""
        deps = [a for a in args if isinstance(a, ThreadFuture)]
        future = ThreadFuture(key, deps)
        waiting = [len(deps)]
        lock = threading.Lock()

        def start() -> None:
            failed = next((d for d in deps if d.status != "finished"), None)
            if failed is not None:
                if not failed.cancelled() and future.set_running_or_notify_cancel():
                    future.set_exception(failed.exception())
                else:
                    future.cancel()
                return
            try:
                self._pool.submit(_run, future, fn, args, self._share)
            except RuntimeError:  # the pool was shut down (a failure stopped the run)
                future.cancel()

        def dep_done(_: Future) -> None:
            with lock:
                waiting[0] -= 1
                ready = waiting[0] == 0
            if ready:
                start()

        if not deps:
            start()
        for dep in deps:
            dep.add_done_callback(dep_done)
        return future

    def cancel(self, futures: Iterable[ThreadFuture]) -> None:
        """Cancel the futures that have not started (running tasks finish, as on Dask)."""
        for future in futures:
            future.cancel()

    def nthreads(self) -> dict[str, int]:
        """Threads per worker, as Dask says (one worker: this process)."""
        return {"threads": self._threads}

    def close(self) -> None:
        """Wait for the running tasks; drop the ones not started."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _run(future: ThreadFuture, fn: Callable[..., Any], args: tuple[Any, ...], threads: int) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        with limited(threads, os.cpu_count()):  # a task's native code uses its share of the cores, and all of them
            # while it holds the GIL (the other tasks wait meanwhile)
            result = fn(*(a.result() if isinstance(a, ThreadFuture) else a for a in args))
    except BaseException as exc:  # noqa: BLE001 - the task's failure is its future's
        future.set_exception(exc)
    else:
        future.set_result(result)


AnyClient = Union["Client", ThreadClient]


def as_completed(futures: list[Any]) -> ThreadsCompleted | Any:
    """The futures of a :class:`ThreadClient` or of a Dask client, as they finish; more can be ``add``-ed while
    iterating (Dask's ``as_completed``, or :class:`ThreadsCompleted`)."""
    if not futures or isinstance(futures[0], ThreadFuture):
        return ThreadsCompleted(futures)
    from distributed import as_completed as dask_completed

    return dask_completed(futures)


class ThreadsCompleted:
    """:class:`ThreadFuture` objects as they finish, each after the finished ones it depends on (a task fails in
    the callback of the upstream failure it reports, so it can be done first)."""

    def __init__(self, futures: Iterable[ThreadFuture] = ()) -> None:
        self._finished: queue.SimpleQueue[ThreadFuture] = queue.SimpleQueue()
        self._wanted: set[int] = set()
        self._yielded: set[int] = set()
        for future in futures:
            self.add(future)

    def add(self, future: ThreadFuture) -> None:
        """Also yield ``future`` when it finishes."""
        self._wanted.add(id(future))
        future.add_done_callback(self._finished.put)

    def __iter__(self) -> Iterator[ThreadFuture]:
        while len(self._yielded) < len(self._wanted):
            yield from self._emit(self._finished.get())

    def _emit(self, future: ThreadFuture) -> Iterator[ThreadFuture]:
        for dep in future.deps:
            if dep.done() and id(dep) in self._wanted and id(dep) not in self._yielded:
                yield from self._emit(dep)
        if id(future) not in self._yielded:
            self._yielded.add(id(future))
            yield future


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                local_directory: Path | None = None) -> Iterator[AnyClient]:
    """A client for a run.

    ``scheduler`` None: a ``LocalCluster`` of worker processes (one per core, one thread each, memory limit =
    RAM / workers). "threads": a :class:`ThreadClient` (quick start, no Dask; notebooks, small jobs).
    "tcp://host:port": the existing scheduler at that address. A local cluster keeps its scratch and spill files
    (worker folders, locks) in ``local_directory`` (the job's work folder) rather than ``$TMPDIR``.
    """
    n = workers or os.cpu_count() or 1
    if scheduler == "threads":
        keep_heap()  # the tasks run in this process: what the pre-spawn environment does for worker processes
        no_huge_pages()
        client = ThreadClient(n)
        try:
            yield client
        finally:
            client.close()
        return
    from distributed import Client

    if is_remote(scheduler):
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise CimError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    scratch = {"temporary-directory": str(local_directory)} if local_directory is not None else {}
    with dask.config.set({**_LOCAL_CONFIG, **scratch}):
        with dask.config.set(_forkserver()), _local_cluster(n, local_directory) as client:
            yield client


#: Dask's statistical profiler samples every worker thread's stack every 10 ms; cim reports its own timings.
#: Dask starts worker processes with MALLOC_TRIM_THRESHOLD_ set, which switches off glibc's adaptive mmap
#: threshold: every array over 128 KiB was then mapped and unmapped anew, a page fault per 4 KiB touched (690 k
#: faults, 2.2 CPU s of system time in the tiles job on 3 M points). Arrays below 64 MiB (a tile's columns) come
#: from the heap instead, which keeps 64 MiB spare when it shrinks (72 k faults, 0.7 s). numpy asks for no
#: transparent huge pages (:func:`no_huge_pages`).
#: A worker holds one task at a time (Dask's default, 1.1, gives one thread two): the next goes to the first worker
#: free, in priority order, so no worker waits behind a task queued on a busy one (see :func:`run_tasks`).
#: Dask's periodic checks run less often on a local cluster: the event-loop tick (20 ms), the system monitor
#: (0.5 s, for the dashboard) and the memory monitor (0.1 s) woke every process of the cluster, whose CPU the
#: workers share on a small machine (the terrain job on 2 workers: the driver's CPU 2.0 -> 1.6 s in 14 s).
HEAP_PAD = 64 * 2**20
_LOCAL_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.scheduler.worker-saturation": 1.0,
                 "distributed.admin.tick.interval": "500ms", "distributed.admin.system-monitor.interval": "2s",
                 "distributed.worker.memory.monitor-interval": "500ms",
                 "distributed.client.scheduler-info-interval": "10s", "distributed.deploy.cluster-repr-interval": "10s",
                 "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": HEAP_PAD,
                 "distributed.nanny.pre-spawn-environ.MALLOC_TOP_PAD_": HEAP_PAD,
                 "distributed.nanny.pre-spawn-environ.NUMPY_MADVISE_HUGEPAGE": 0}


def keep_heap() -> bool:
    """In this process, glibc's malloc as local worker processes get it (:data:`_LOCAL_CONFIG`): arrays below
    :data:`HEAP_PAD` from the heap, which keeps that much spare when it shrinks. With glibc's defaults each freed
    tile column was unmapped and the next one faulted in anew, a page fault per 4 KiB (``cim tiles`` on the bcts
    files with ``--scheduler threads``: ~1 s of system time of 3.4 CPU s). False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_PAD)) and bool(mallopt(_M_TOP_PAD, HEAP_PAD))


_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # glibc's mallopt parameters (malloc.h)


def no_huge_pages() -> None:
    """In this process, numpy's arrays as local worker processes get them (``NUMPY_MADVISE_HUGEPAGE=0``,
    :data:`_LOCAL_CONFIG`): without asking the kernel for transparent huge pages. A tile's columns live for one
    step; faulting them in as huge pages made the kernel compact memory when it was fragmented (after any large
    process), and ``cim tiles --scheduler threads`` on the bcts files spent 1.0 s of system time instead of 0.4 s
    (2.49 -> 2.09 s wall, user time unchanged; 4 alternating rounds). Through numpy's switch for that setting."""
    import numpy as np

    switch = getattr(getattr(np, "_core", np).multiarray, "_set_madvise_hugepage", None)
    if switch is not None:
        switch(False)


#: What the fork server imports once for all worker processes: distributed and cim's runner with its libraries
#: (numpy, pyproj, laspy, pydantic), the modules of the job's stages (:func:`start_forkserver`), and
#: :mod:`cim.runner.forkserver_exit`, which spares the server Python's teardown when it ends.
PRELOAD = ("distributed", "cim.pipeline.execute", "cim.runner.forkserver_exit")

#: Dask's pre-spawn environment for worker processes (distributed.yaml: ``distributed.nanny.pre-spawn-environ``:
#: one OpenMP/BLAS thread, glibc's trim threshold), which :func:`start_forkserver` gives the server when no Dask
#: configuration of the user's could say otherwise, without importing Dask (0.1-0.3 s before the server starts).
DASK_PRE_SPAWN = {"MALLOC_TRIM_THRESHOLD_": 65536, "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                  "OPENBLAS_NUM_THREADS": 1}


def start_forkserver(modules: Iterable[str] = ()) -> bool:
    """Start the fork server that local worker processes are forked from, once per process (a spawned worker
    imports distributed, cim and their libraries anew: ~0.5 CPU s each, and the job's stage modules with
    theirs, e.g. rasterio and scipy: ~0.5 CPU s more); False where there is none (Windows). ``modules`` (the
    job's stage modules) are imported by the server too; a server that runs already keeps what it imported.

    The server is a fresh single-threaded process: it imports :data:`PRELOAD` in the background (started as soon
    as the job's stages are known, while the driver imports and plans) with Dask's pre-spawn environment
    (:func:`worker_environ`), which its workers inherit: Dask applies that environment only to the processes it
    spawns itself.
    """
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    multiprocessing.get_context("forkserver").set_forkserver_preload([*PRELOAD, *sorted(set(modules))])
    environ = worker_environ()
    saved = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)
    try:
        forkserver.ensure_running()  # a no-op when it runs already
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
    return True


def worker_environ() -> dict[str, str]:
    """The environment local worker processes start with: Dask's pre-spawn environment with cim's malloc settings
    (:data:`_LOCAL_CONFIG`) and a fixed hash seed (the Nanny's, so that every worker hashes alike); variables set
    in this process win. Dask's configuration is read only where the user may have changed it (a ``DASK_*``
    variable, a config file): importing Dask would delay the server's start."""
    if _dask_configured():
        import dask
        import distributed.config  # noqa: F401 - its defaults of the pre-spawn environment

        with dask.config.set(_LOCAL_CONFIG):  # as distributed's Nanny reads it
            spawn = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))  # the block restores it in place
    else:
        spawn = {**DASK_PRE_SPAWN, **{key.rpartition(".")[2]: value for key, value in _LOCAL_CONFIG.items()
                                      if key.startswith("distributed.nanny.pre-spawn-environ.")}}
    environ = {name: os.environ.get(name, str(value)) for name, value in spawn.items() if value is not None}
    if environ.get("PYTHONHASHSEED") in (None, "0"):
        environ["PYTHONHASHSEED"] = "6640"
    return environ


def _dask_configured() -> bool:
    """Whether Dask's configuration may differ from its defaults here: a ``DASK_*`` variable or a config folder
    (``$DASK_CONFIG``, ``~/.config/dask``, ``<prefix>/etc/dask``, ``/etc/dask``)."""
    if any(name.startswith("DASK_") for name in os.environ):
        return True
    folders = [Path.home() / ".config" / "dask", Path(sys.prefix) / "etc" / "dask", Path("/etc/dask")]
    return any(folder.is_dir() for folder in folders)


def _forkserver() -> dict[str, str]:
    """Dask's configuration for worker processes forked from :func:`start_forkserver`'s server ({}: spawned)."""
    if not start_forkserver():
        return {}
    from distributed import utils

    utils._forkserver_preload_set = True  # else distributed sets a preload list of its own (it imports pandas)
    return {"distributed.worker.multiprocessing-method": "forkserver"}


@contextmanager
def _local_cluster(n: int, local_directory: Path | None) -> Iterator[Client]:
    """A cluster of ``n`` worker processes on this machine (one thread each) and its client."""
    import psutil
    from distributed import Client, LocalCluster

    memory = int(psutil.virtual_memory().total * 0.9 / n)
    if local_directory is not None:
        local_directory.mkdir(parents=True, exist_ok=True)
    with LocalCluster(
        local_directory=str(local_directory) if local_directory is not None else None,
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        memory_limit=memory,
        dashboard_address=":0",
        silence_logs=logging.CRITICAL,  # failures reach the user once, through cim's report, not as worker logs
    ) as cluster, Client(cluster) as client:
        log.info("local Dask cluster: %d workers", len(cluster.workers))
        yield client


def _storage_probe(reads: list[str], token: str, secret: str, out_dir: str) -> str:
    """Worker side of :func:`check_shared_storage`: "" when all is well, else what this worker cannot do."""
    try:
        if Path(token).read_text() != secret:
            return f"see the output folder {out_dir} as the driver does (it holds other files)"
    except OSError:
        return f"see the output folder {out_dir} (no file the driver wrote there is visible)"
    for path in reads:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            return f"read the input {path} ({exc.strerror or exc})"
    probe = Path(token).with_name(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.probe")
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return f"write into the output folder {out_dir} ({exc.strerror or exc})"
    return ""


def check_shared_storage(client: Client, reads: list[Path], out_dir: Path, check_dir: Path) -> None:
    """Before any task: every worker must read ``reads`` and see and write ``out_dir`` as the driver does (it
    reads a file the driver wrote into ``check_dir``, inside ``out_dir``, and writes one there); otherwise a
    CimError names the first worker that cannot."""
    check_dir.mkdir(parents=True, exist_ok=True)
    secret = uuid.uuid4().hex
    token = check_dir / f"{secret[:8]}.token"
    token.write_text(secret)
    try:
        answers = client.run(_storage_probe, [str(p) for p in reads], str(token), secret, str(out_dir))
    finally:
        token.unlink(missing_ok=True)
    for worker, problem in sorted(answers.items()):
        if problem:
            raise CimError(f"cim needs a file system shared by all workers: worker {worker} cannot {problem}")
