"""What a run's timeline says: its critical path, its serial share and the busy time of every stage.

A timeline is the list of tasks that ran (:meth:`cim.runner.tasks.RunReport.timeline`): dicts with ``task``,
``stage``, ``start`` and ``end`` (seconds after the first start), ``deps`` (the tasks it waited for), ``cpu`` and
``points``. The **critical path** is the chain of dependent tasks with the largest summed duration: the wall
time no number of workers can beat without making one of its tasks faster. The **serial share** is the part of
the wall time during which exactly one task ran: what more workers cannot shorten.
"""

from __future__ import annotations

from graphlib import TopologicalSorter
from typing import Any


def analyse(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The wall time (end of the last task), the critical path, the serial and idle shares and the stage table."""
    wall = max((t["end"] for t in tasks), default=0.0)
    path = critical_path(tasks)
    serial, idle = serial_seconds(tasks)
    on_path: dict[str, float] = {}
    for t in path:
        on_path[t["stage"]] = on_path.get(t["stage"], 0.0) + t["end"] - t["start"]
    return {
        "wall": round(wall, 3),
        "critical_path": {"seconds": round(sum(t["end"] - t["start"] for t in path), 3), "tasks": path},
        "serial_share": round(sum(serial.values()) / wall, 4) if wall > 0 else 0.0,
        "idle_share": round(idle / wall, 4) if wall > 0 else 0.0,
        "stage_profile": stage_profile(tasks, serial, on_path),
    }


def critical_path(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chain of dependent tasks (first to last) with the largest summed duration, as task, stage, tile,
    start and end. Dependencies on tasks not in the timeline (kept by a resume) are ignored."""
    by_key = {t["task"]: t for t in tasks}
    graph = {t["task"]: [d for d in t.get("deps", []) if d in by_key] for t in tasks}
    longest: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for key in TopologicalSorter(graph).static_order():
        task = by_key[key]
        prior = max(graph[key], key=lambda d: (longest[d], d), default=None)
        before[key] = prior
        longest[key] = task["end"] - task["start"] + (longest[prior] if prior is not None else 0.0)
    last = max(longest, key=lambda k: (longest[k], k), default=None)
    path = []
    while last is not None:
        task = by_key[last]
        path.append({k: task[k] for k in ("task", "stage", "tile", "start", "end")})
        last = before[last]
    return path[::-1]


def serial_seconds(tasks: list[dict[str, Any]]) -> tuple[dict[str, float], float]:
    """Seconds during which exactly one task ran, by the stage of that task, and seconds during which none ran
    (between 0 and the last end)."""
    spans = [(t["start"], t["end"], t["stage"]) for t in tasks if t["end"] > t["start"]]
    events = sorted([(s, 1, i) for i, (s, _, _) in enumerate(spans)] + [(e, 0, i) for i, (_, e, _) in enumerate(spans)])
    serial: dict[str, float] = {}
    idle = 0.0
    running: set[int] = set()
    now = 0.0
    for time, starts, index in events:  # an end sorts before a start at the same time: touching is not overlapping
        if time > now:
            if len(running) == 1:
                stage = spans[next(iter(running))][2]
                serial[stage] = serial.get(stage, 0.0) + time - now
            elif not running:
                idle += time - now
            now = time
        (running.add if starts else running.discard)(index)
    return serial, idle


def stage_profile(tasks: list[dict[str, Any]], serial: dict[str, float],
                  on_path: dict[str, float]) -> list[dict[str, Any]]:
    """Per stage, in first-start order: tasks, busy (summed task) seconds, CPU seconds, points and points per busy
    second, seconds it ran alone (``serial``) and seconds on the critical path."""
    rows: dict[str, dict[str, Any]] = {}
    for t in sorted(tasks, key=lambda t: t["start"]):
        row = rows.setdefault(t["stage"], {"stage": t["stage"], "tasks": 0, "busy": 0.0, "cpu": 0.0, "points": 0})
        row["tasks"] += 1
        row["busy"] += t["end"] - t["start"]
        row["cpu"] += t.get("cpu", 0.0)
        row["points"] += t.get("points", 0)
    for row in rows.values():
        row["points_per_s"] = round(row["points"] / row["busy"]) if row["points"] and row["busy"] > 0 else None
        row.update(busy=round(row["busy"], 3), cpu=round(row["cpu"], 3),
                   serial=round(serial.get(row["stage"], 0.0), 3), critical=round(on_path.get(row["stage"], 0.0), 3))
    return list(rows.values())
