"""A generic, resumable task runner on Dask.

Callers describe work as :class:`Task` objects (a function, its arguments, a fingerprint of everything the
result depends on). :func:`run_tasks` skips tasks the manifest records with the same fingerprint, submits the
rest to Dask with their dependencies, records each finished task in the manifest as soon as it is done, and
returns a :class:`RunReport`. Data moves between tasks through files; results are small JSON-able values.

A task may do the work of several recorded units (a tile chain runs several stages): its result then lists them
under ``records`` (dicts with key, fingerprint, result, seconds), and the manifest records each of them instead
of the task; a failure inside one of them is raised as :class:`PartError` naming it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cim.errors import CimError, os_error_message
from cim.runner.cluster import as_completed
from cim.runner.fingerprints import intact
from cim.runner.manifest import Manifest
from cim.runner.timeline import analyse

if TYPE_CHECKING:
    from cim.runner.cluster import AnyClient


@dataclass(frozen=True)
class Dep:
    """Placeholder argument: the result of the task with this key."""

    key: str


@dataclass
class Task:
    """One unit of work. ``fn`` must be a module-level function (it is pickled to the workers).

    The result must be JSON-able; when it is a dict with an ``outputs`` list of paths (relative to the run's
    output folder), a recorded task is only skipped while those files still exist and, where the result has
    ``stamps`` (see :func:`cim.runner.fingerprints.stamp`), are unchanged.
    """

    key: str
    stage: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    fingerprint: str = ""
    #: Start on the first worker that is free, in priority order: the task is submitted only once its
    #: dependencies have finished, with their results, so that Dask queues it on its scheduler. A task submitted
    #: with futures is bound to a worker as soon as they finish, and the run could end with one worker alone on
    #: the last of the tasks bound to it while the other had nothing left (for tasks that only wait for others,
    #: e.g. a tile chain for the partitions that write its points).
    queued: bool = False

    @property
    def deps(self) -> list[str]:
        return [a.key for a in self.args if isinstance(a, Dep)]


@dataclass
class TaskOutcome:
    key: str
    stage: str
    status: str  # 'done', 'skipped', 'failed', 'cancelled'
    seconds: float = 0.0
    result: Any = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    #: For a failed task made of parts: the key of the part that failed.
    part: str = ""
    #: When (epoch seconds) and where (Dask worker name) a task that ran started.
    started: float = 0.0
    worker: str = ""
    #: The keys of the outcomes this one waited for (the task graph, see :mod:`cim.runner.timeline`).
    deps: list[str] = field(default_factory=list)
    #: CPU seconds of the worker process while the task ran; when it ended (epoch s; 0: ``started + seconds``).
    cpu: float = 0.0
    ended: float = 0.0


class PartError(CimError):
    """A part of a task (e.g. one stage of a tile chain) failed; ``part`` is its key, the message its error."""

    def __init__(self, part: str, message: str) -> None:
        self.part = part
        super().__init__(message)

    def __reduce__(self) -> tuple:
        return (type(self), (self.part, str(self)))


@contextmanager
def caught_warnings() -> Iterator[list[str]]:
    """Collect the messages of the UserWarnings (CimWarning included) raised inside the block."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(str(w.message) for w in caught if issubclass(w.category, UserWarning))


def describe(exc: BaseException) -> str:
    """One line for a task's failure: a CimError's own message, else the exception's last line."""
    if isinstance(exc, CimError):
        return str(exc)
    if isinstance(exc, OSError) and os_error_message(exc):  # disk full, read-only, permission: say so
        return os_error_message(exc)
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


@dataclass
class RunReport:
    """What happened to every task of a run."""

    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)
    seconds: float = 0.0

    def by_status(self, status: str) -> list[TaskOutcome]:
        return [o for o in self.outcomes.values() if o.status == status]

    @property
    def ok(self) -> bool:
        return not self.by_status("failed") and not self.by_status("cancelled")

    @property
    def warnings(self) -> list[str]:
        return list(dict.fromkeys(w for o in self.outcomes.values() for w in o.warnings))  # once each, in order

    def timeline(self) -> dict[str, Any]:
        """Every task that ran, by start: stage, tile, worker, start and end (seconds after the first start), the
        tasks it waited for, CPU seconds, points and item (an item stage's task); then its analysis
        (:func:`cim.runner.timeline.analyse`)."""
        ran = sorted((o for o in self.outcomes.values() if o.status == "done" and o.started),
                     key=lambda o: (o.started, o.key))
        t0 = ran[0].started if ran else 0.0
        keys = {o.key for o in ran}
        tasks = [
            {"task": o.key, "stage": o.stage, "tile": _get(o.result, "tile", ""), "worker": o.worker,
             "start": round(o.started - t0, 3), "end": round((o.ended or o.started + o.seconds) - t0, 3),
             "deps": [d for d in o.deps if d in keys], "cpu": round(o.cpu, 3), "points": _get(o.result, "points", 0),
             "item": _get(o.result, "item", "")}
            for o in ran]
        return {"t0": t0, "tasks": tasks, **analyse(tasks)}

    def stage_table(self) -> list[dict[str, Any]]:
        """Per stage: tasks done / skipped / failed and summed task seconds, in first-seen order."""
        rows: dict[str, dict[str, Any]] = {}
        for o in self.outcomes.values():
            row = rows.setdefault(o.stage, {"stage": o.stage, "done": 0, "skipped": 0, "failed": 0,
                                            "cancelled": 0, "seconds": 0.0})
            row[o.status] += 1
            row["seconds"] = round(row["seconds"] + o.seconds, 3)
        return list(rows.values())


def _get(result: Any, name: str, default: Any) -> Any:
    return result.get(name, default) if isinstance(result, dict) else default


@dataclass
class _Payload:
    """What a worker returns: the task's result plus its warnings, duration, start (epoch s) and worker."""

    result: Any
    warnings: list[str]
    seconds: float
    started: float = 0.0
    worker: str = ""
    cpu: float = 0.0


def _worker_name() -> str:
    distributed = sys.modules.get("distributed")  # not imported: a thread of a ThreadClient
    if distributed is not None:
        try:
            return str(distributed.get_worker().name)
        except ValueError:  # not inside a Dask worker
            pass
    return f"{socket.gethostname()}:{os.getpid()}"


def _execute(fn: Callable[..., Any], *args: Any) -> _Payload:
    """Worker-side wrapper: hand dependencies' plain results to ``fn``, time it, collect its warnings."""
    args = tuple(a.result if isinstance(a, _Payload) else a for a in args)
    started, start, cpu = time.time(), time.perf_counter(), time.process_time()
    with caught_warnings() as messages:
        result = fn(*args)
    if isinstance(result, dict) and result.get("warnings"):
        messages.extend(result["warnings"])
    return _Payload(result, messages, time.perf_counter() - start, started, _worker_name(), time.process_time() - cpu)


def run_tasks(
    tasks: list[Task],
    client: AnyClient,
    manifest: Manifest,
    *,
    out_dir: Path | None = None,
    force: bool = False,
    keep_going: bool = False,
    on_outcome: Callable[[TaskOutcome], None] | None = None,
) -> RunReport:
    """Run ``tasks`` (listed so that dependencies come first) on ``client``; see the module docstring.

    The list's order is also the order of preference: of the tasks that are ready, the one listed first starts
    first (Dask ``priority``), so a caller lists the longest work (a large file, a large tile) first and a run does
    not end with one worker alone on it. Dask keys begin with the task's stage: Dask groups tasks by that prefix,
    and only a large group of tasks without dependencies is queued on the scheduler in priority order (a group
    per task would be handed out to the workers at once, as submitted, and then moved by work stealing)."""
    started = time.perf_counter()
    report = RunReport()
    by_key = {t.key: t for t in tasks}
    futures: dict[str, Any] = {}
    results: dict[str, Any] = {}
    run_id = uuid.uuid4().hex[:8]

    def finish(outcome: TaskOutcome) -> None:
        report.outcomes[outcome.key] = outcome
        if on_outcome:
            on_outcome(outcome)

    held: dict[str, int] = {}  # tasks waiting for their dependencies to finish (queued) or to be submitted: rank

    def submit(rank: int, task: Task) -> None:
        args = tuple((results[a.key] if a.key in results else futures[a.key]) if isinstance(a, Dep) else a
                     for a in task.args)
        futures[task.key] = client.submit(_execute, task.fn, *args, key=f"{task.stage}-{run_id}-{task.key}", pure=False,
                                          priority=len(tasks) - rank)

    def can_start(task: Task) -> bool:
        return all(d in results or (not task.queued and d in futures) for d in task.deps)

    def release() -> list[str]:
        """Submit the held tasks that can start now, in rank order (one may let a later one start); their keys."""
        started = [key for key in sorted(held, key=held.get) if can_start(by_key[key])]
        for key in started:
            submit(held.pop(key), by_key[key])
        return started + (release() if started else [])

    for rank, task in enumerate(tasks):
        entry = None if force else manifest.finished(task.key, task.fingerprint)
        rerun_dep = any(d in futures or d in held for d in task.deps)
        if entry is not None and not rerun_dep and intact(entry["result"], out_dir):
            results[task.key] = entry["result"]
            finish(TaskOutcome(task.key, task.stage, "skipped", result=entry["result"]))
        elif can_start(task):
            submit(rank, task)
        else:
            held[task.key] = rank

    key_of = {f.key: k for k, f in futures.items()}
    failed: set[str] = set()
    pending = as_completed(list(futures.values()))
    for future in pending:
        key = key_of[future.key]
        task = by_key[key]
        if future.status == "finished":
            payload = future.result()
            results[key] = payload.result
            records = payload.result.get("records") if isinstance(payload.result, dict) else None
            for record in records or [{"key": key, "fingerprint": task.fingerprint, "result": payload.result,
                                       "seconds": payload.seconds}]:
                manifest.record(record["key"], record["fingerprint"], record["result"], record["seconds"])
            finish(TaskOutcome(key, task.stage, "done", payload.seconds, payload.result, warnings=payload.warnings,
                               started=payload.started, worker=payload.worker, deps=task.deps, cpu=payload.cpu))
            for new in release():
                key_of[futures[new].key] = new
                pending.add(futures[new])
        elif future.status == "cancelled":
            finish(TaskOutcome(key, task.stage, "cancelled", error="cancelled"))
        else:
            if any(d in failed for d in task.deps):
                failed.add(key)
                finish(TaskOutcome(key, task.stage, "cancelled", error="an upstream task failed"))
                continue
            failed.add(key)
            exc = future.exception()
            finish(TaskOutcome(key, task.stage, "failed", error=describe(exc), part=getattr(exc, "part", "")))
            if not keep_going:
                remaining = [f for k, f in futures.items() if k not in report.outcomes and f.key != future.key]
                client.cancel(remaining)
                for t in tasks:
                    if t.key not in report.outcomes:
                        finish(TaskOutcome(t.key, t.stage, "cancelled", error="run stopped after a failure"))
                break
    for key in sorted(held, key=held.get):  # kept back by a failed (or cancelled) dependency
        if key not in report.outcomes:
            finish(TaskOutcome(key, by_key[key].stage, "cancelled", error="an upstream task failed"))
    report.seconds = time.perf_counter() - started
    return report
