"""The order in which ready tasks start: the longest work first, so that no worker is left alone with it at the end
(issue 12: the tail of the 2-worker terrain job was one large tile on one worker while the other idled)."""

from __future__ import annotations

import time
from pathlib import Path

from cim.pipeline.execute import loaded_points
from cim.runner import Dep, Manifest, Task, dask_client, run_tasks
from cim.tiling import TileGrid


def _sleep(seconds: float) -> dict[str, float]:
    time.sleep(seconds)
    return {"slept": seconds}


def _ready() -> bool:
    return True


def test_ready_tasks_start_in_list_order_on_worker_processes(tmp_path: Path) -> None:
    # listed longest first; with the worker that frees first taking the next task listed, every task starts no
    # later than the ones after it. Handed out to the workers at once (Dask's default for tasks of distinct key
    # prefixes) or two at a time per worker (worker-saturation 1.1), a shorter task started before a longer one.
    # Dask hands out the first tasks of a group (up to twice the threads) as they come: the order holds after them.
    seconds = [0.60 - 0.05 * i for i in range(12)]
    tasks = [Task(f"sleep/{i}", "sleep", _sleep, (s,), f"fp{i}") for i, s in enumerate(seconds)]
    with dask_client(None, 2, tmp_path / "dask") as client:
        client.run(_ready)  # both workers up and this module imported: they start alike
        report = run_tasks(tasks, client, Manifest(tmp_path / "manifest.jsonl"))
    assert report.ok
    starts = [report.outcomes[t.key].started for t in tasks]
    assert len({report.outcomes[t.key].worker for t in tasks}) == 2
    first = 2 * 2
    for i in range(first, len(tasks)):
        assert starts[i] <= min(starts[i + 1:], default=starts[i]) + 0.02, \
            (i, [round(s - starts[0], 3) for s in starts])


def test_queued_tasks_behind_dependencies_start_on_the_first_free_worker(tmp_path: Path) -> None:
    # tile chains that wait for partitions: each waits for two of six, and they are listed longest first. Bound to
    # a worker as the partitions finished (Dask binds tasks whose dependencies are many), chains waited on one
    # worker while the other ran out of work, and the run ended with one worker alone. Queued, each goes to the
    # first free worker.
    parts = [Task(f"part/{i}", "part", _sleep, (0.02,), f"p{i}") for i in range(6)]
    seconds = [0.60 - 0.05 * i for i in range(12)]
    chains = [Task(f"chain/{i}", "chain", _sleep_after, (s, Dep(f"part/{i % 6}"), Dep(f"part/{(i + 1) % 6}")),
                   f"c{i}", queued=True) for i, s in enumerate(seconds)]
    with dask_client(None, 2, tmp_path / "dask") as client:
        client.run(_ready)
        report = run_tasks([*parts, *chains], client, Manifest(tmp_path / "manifest.jsonl"))
    assert report.ok and all(report.outcomes[t.key].result == {"slept": s} for t, s in zip(chains, seconds))
    ends: dict[str, float] = {}
    for outcome in report.outcomes.values():
        ends[outcome.worker] = max(ends.get(outcome.worker, 0.0), outcome.started + outcome.seconds)
    # bound (queued=False) the workers ended 0.45-0.5 s apart; queued, within the shortest chain (0.05 s)
    assert len(ends) == 2 and abs(ends.popitem()[1] - ends.popitem()[1]) < 0.2


def _sleep_after(seconds: float, *parts: dict[str, float]) -> dict[str, float]:
    assert all(part == {"slept": 0.02} for part in parts)  # the results of the tasks waited for, not futures
    return _sleep(seconds)


def test_loaded_points_adds_the_neighbours_share_in_the_buffer() -> None:
    # 3 x 3 tiles of 100 points each, 100 m tiles with a 10 m buffer: a buffer takes a tenth of an edge neighbour
    # and a hundredth of a corner one (uniform points)
    counts = {f"{ix}_{iy}": 100 for ix in range(3) for iy in range(3)}
    loaded = loaded_points(TileGrid(100.0, 10.0), counts)
    assert set(loaded) == set(counts)
    assert loaded["1_1"] == 100 + 4 * 10 + 4 * 1
    assert loaded["0_1"] == 100 + 3 * 10 + 2 * 1
    assert loaded["0_0"] == 100 + 2 * 10 + 1 * 1
    # an edge tile with more core points than an interior one can load fewer
    counts["0_1"] = 110
    loaded = loaded_points(TileGrid(100.0, 10.0), counts)
    assert loaded["0_1"] < loaded["1_1"]
