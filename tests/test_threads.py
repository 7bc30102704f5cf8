"""A task's native code uses its share of the cores: one thread in a worker process or a 1-worker run, the pool's
share with the threads scheduler, every core (or OMP_NUM_THREADS) outside a run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import cim.terrain.objects
import cim.terrain.outliers
from cim.runner.cluster import ThreadClient, dask_client
from cim.threads import limited, task_threads


def test_outside_a_run_every_core_or_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert task_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert task_threads() == 1
    with limited(3):
        assert task_threads() == 3
    assert task_threads() == 1


def test_threads_scheduler_tasks_get_their_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for pool, share in ((1, 8), (2, 4), (8, 1), (16, 1)):
        client = ThreadClient(pool)
        try:
            assert client.submit(task_threads, key="t").result() == share
        finally:
            client.close()


def test_worker_processes_use_one_thread_per_task(tmp_path: Path) -> None:
    with dask_client(None, 2, tmp_path / "dask") as client:
        assert client.submit(task_threads, pure=False).result() == 1


class _Tree:
    """cKDTree that records the ``workers`` of its queries."""

    seen: list[int] = []

    def __init__(self, points: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        self.tree = cKDTree(points)

    def query(self, *args: object, **kwargs: object):  # noqa: ANN201 - cKDTree's
        _Tree.seen.append(int(kwargs.get("workers", 1)))  # type: ignore[arg-type]
        return self.tree.query(*args, **kwargs)


def test_neighbour_queries_use_the_task_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kNN queries of the outlier filter and the object classes ask for the task's threads, never -1."""
    monkeypatch.setattr(cim.terrain.outliers, "cKDTree", _Tree)
    monkeypatch.setattr(cim.terrain.objects, "cKDTree", _Tree)
    _Tree.seen = []
    xyz = np.random.default_rng(1).random((2000, 3)) * 10
    with limited(1):
        cim.terrain.outliers.statistical_outliers(xyz)
        cim.terrain.outliers.isolated_points(xyz)
        cim.terrain.objects.local_shape(xyz)
    assert _Tree.seen and set(_Tree.seen) == {1}, _Tree.seen
