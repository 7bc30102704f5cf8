"""How many threads one task's own native code may use (nearest-neighbour queries, its thread pools).

A run's parallelism is its workers. A task that also spreads a query over every core oversubscribes the machine
(two workers each querying on two threads on two cores) and lets a "1 worker" run use every core. Dask starts its
worker processes with ``OMP_NUM_THREADS=1`` (its pre-spawn environment), and the threads scheduler gives each of
its pool threads its share of the cores (:func:`limited`): inside a run a task uses that many threads. Outside a
run (a notebook calling :func:`cim.terrain.outliers.statistical_outliers` directly) ``OMP_NUM_THREADS`` when set,
else every core.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


def task_threads() -> int:
    """The threads native code called from this thread may use (at least 1)."""
    limit = getattr(_local, "limit", None)
    if limit is not None:
        return limit
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def gil_threads() -> int:
    """The threads a native call that holds Python's GIL may use (at least 1). Where tasks run as threads of one
    process (the threads scheduler), only one such call runs at a time, and the others' tasks wait for it: it may
    use the cores of them all (:func:`limited`). Elsewhere :func:`task_threads`."""
    return getattr(_local, "gil", None) or task_threads()


@contextmanager
def limited(threads: int, gil: int | None = None) -> Iterator[None]:
    """Within the block, :func:`task_threads` of this thread is ``threads`` (at least 1), and :func:`gil_threads`
    ``gil`` (default: ``threads``)."""
    before = getattr(_local, "limit", None), getattr(_local, "gil", None)
    _local.limit, _local.gil = max(1, threads), max(1, gil or threads)
    try:
        yield
    finally:
        _local.limit, _local.gil = before
