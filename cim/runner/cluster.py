"""Dask clients: a local cluster by default, an existing one by address."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
import psutil
from distributed import Client, LocalCluster

from cim.errors import CimError

log = logging.getLogger("cim.runner")


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A Dask client for a run.

    ``scheduler`` None: a ``LocalCluster`` of worker processes (one per core, one thread each, memory limit =
    RAM / workers). "threads": an in-process cluster (quick start; notebooks, small jobs). "tcp://host:port":
    the existing scheduler at that address.
    """
    if scheduler and scheduler not in ("local", "threads"):
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
    with dask.config.set(_LOCAL_CONFIG), _local_cluster(n, processes) as client:
        yield client


#: Dask's statistical profiler samples every worker thread's stack every 10 ms; cim reports its own timings.
_LOCAL_CONFIG = {"distributed.worker.profile.enabled": False}


@contextmanager
def _local_cluster(n: int, processes: bool) -> Iterator[Client]:
    memory = int(psutil.virtual_memory().total * 0.9 / n) if processes else 0
    with LocalCluster(
        n_workers=n if processes else 1,
        threads_per_worker=1 if processes else n,
        processes=processes,
        memory_limit=memory,
        dashboard_address=":0",
        silence_logs=logging.CRITICAL,  # failures reach the user once, through cim's report, not as worker logs
    ) as cluster, Client(cluster) as client:
        log.info("local Dask cluster: %d workers", len(cluster.workers))
        yield client
