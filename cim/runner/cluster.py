"""Dask clients: a local cluster by default, an existing one by address; the shared-storage check."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask
import psutil
from distributed import Client, LocalCluster

from cim.errors import CimError

log = logging.getLogger("cim.runner")


def is_remote(scheduler: str | None) -> bool:
    """Whether ``scheduler`` names an existing cluster (whose workers may run on other machines)."""
    return bool(scheduler) and scheduler not in ("local", "threads")


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                local_directory: Path | None = None) -> Iterator[Client]:
    """A Dask client for a run.

    ``scheduler`` None: a ``LocalCluster`` of worker processes (one per core, one thread each, memory limit =
    RAM / workers). "threads": an in-process cluster (quick start; notebooks, small jobs). "tcp://host:port":
    the existing scheduler at that address. A local cluster keeps its scratch and spill files in
    ``local_directory`` (the job's work folder) rather than the system temp folder.
    """
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
    n = workers or os.cpu_count() or 1
    processes = scheduler != "threads"
    with dask.config.set(_LOCAL_CONFIG), _local_cluster(n, processes, local_directory) as client:
        yield client


#: Dask's statistical profiler samples every worker thread's stack every 10 ms; cim reports its own timings.
#: Dask starts worker processes with MALLOC_TRIM_THRESHOLD_ set, which switches off glibc's adaptive mmap
#: threshold: every array over 128 KiB was then mapped and unmapped anew, a page fault per 4 KiB touched (690 k
#: faults, 2.2 CPU s of system time in the tiles job on 3 M points). Arrays below 64 MiB (a tile's columns) come
#: from the heap instead, which keeps 64 MiB spare when it shrinks (72 k faults, 0.7 s).
#: A worker holds one task at a time (Dask's default, 1.1, gives one thread two): the next goes to the first worker
#: free, in priority order, so no worker waits behind a task queued on a busy one (see :func:`run_tasks`).
_LOCAL_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.scheduler.worker-saturation": 1.0,
                 "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 64 * 2**20,
                 "distributed.nanny.pre-spawn-environ.MALLOC_TOP_PAD_": 64 * 2**20}


@contextmanager
def _local_cluster(n: int, processes: bool, local_directory: Path | None) -> Iterator[Client]:
    memory = int(psutil.virtual_memory().total * 0.9 / n) if processes else 0
    if local_directory is not None:
        local_directory.mkdir(parents=True, exist_ok=True)
    with LocalCluster(
        local_directory=str(local_directory) if local_directory is not None else None,
        n_workers=n if processes else 1,
        threads_per_worker=1 if processes else n,
        processes=processes,
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
