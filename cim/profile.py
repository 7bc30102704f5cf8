"""``profile.html``: a run's timeline as one self-contained page (no scripts, no network).

A Gantt chart per worker (a task's bar coloured by its stage, its task, tile and times on hover, the critical path
outlined), the answer to "which step is serial?", the table of stages and the critical path. Everything comes
from the run's ``report.json`` (:func:`cim.runner.timeline.analyse` for reports written before it existed).
"""

from __future__ import annotations

import json
import logging
from graphlib import CycleError
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from cim.errors import InputError
from cim.fileutil import write_text_atomic
from cim.runner.timeline import analyse

log = logging.getLogger("cim.profile")

PAGE = "profile.html"
TEMPLATE = resources.files("cim") / "data" / "profile" / "profile.html"

#: stage colours, in the order stages first start (then repeated)
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
WIDTH, ROW, LABEL = 1100, 14, 90  # chart width, lane height and worker label width (px)


def load_report(out_dir: Path) -> dict[str, Any]:
    """The ``report.json`` of a job's output folder, its timeline (re-)analysed."""
    path = out_dir / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no report.json (not the output folder of a `cim run`, or the run did not end)") \
            from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the report: {exc}") from None
    timeline = report.get("timeline") if isinstance(report, dict) else None
    if not isinstance(timeline, dict) or not isinstance(timeline.get("tasks"), list):
        raise InputError(path, "the report has no timeline (written by an older cim: run the job again)")
    for i, task in enumerate(timeline["tasks"]):
        if not (isinstance(task, dict) and all(isinstance(task.get(k), str) for k in ("task", "stage", "tile"))
                and all(isinstance(task.get(k), int | float) for k in ("start", "end"))
                and isinstance(task.setdefault("deps", []), list) and all(isinstance(d, str) for d in task["deps"])):
            raise InputError(path, f"timeline.tasks[{i}] lacks task, stage, tile, start or end, or has bad deps")
        task.setdefault("worker", "")
        task.setdefault("item", "")  # reports written before items were recorded
    try:
        timeline.update(analyse(timeline["tasks"]))  # the same as the report's, also for reports written before it
    except CycleError:
        raise InputError(path, "the timeline's task dependencies form a cycle") from None
    return report


def write_profile(out_dir: Path, report: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/profile.html`` from ``report`` (default: the folder's ``report.json``)."""
    report = report if report is not None else load_report(out_dir)
    path = out_dir / PAGE
    write_text_atomic(path, render(report))
    log.info("profile written to %s", path)
    return path


def render(report: dict[str, Any]) -> str:
    """The page of a report (see the module docstring)."""
    timeline = report["timeline"]
    tasks = timeline["tasks"]
    colours = stage_colours(tasks)
    template = Template(TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(
        title=escape(f"cim profile: job {report.get('job', '')}"),
        facts=escape(f"{len(tasks)} tasks, {work_done(report)}, "
                     f"{timeline['wall']:.2f} s from the first task's start to the last task's end "
                     f"({report.get('seconds', 0):.2f} s of run time in all)"),
        answer=answer(timeline),
        legend="".join(f'<span class="key"><i style="background:{c}"></i>{escape(s)}</span>'
                       for s, c in colours.items()),
        gantt=gantt(tasks, timeline["wall"], colours, {t["task"] for t in timeline["critical_path"]["tasks"]}),
        stages=stage_table(timeline["stage_profile"], timeline["wall"]),
        path=path_table(timeline["critical_path"], {t["task"]: t["item"] for t in tasks}),
    )


def work_done(report: dict[str, Any]) -> str:
    """What a job did, from its report: "12 images", "4 tiles, 1,234 points" or both (tiles and points are left
    out of a job of item stages only)."""
    items = [f"{n:,} {noun}" for noun, n in sorted(report.get("items", {}).items())]
    points = [f"{report.get('tiles', 0):,} tiles", f"{report.get('points', 0):,} points"]
    return ", ".join(items + (points if report.get("tiles") or not items else []))


def stage_colours(tasks: list[dict[str, Any]]) -> dict[str, str]:
    """A colour per stage, in the order stages first start."""
    stages = list(dict.fromkeys(t["stage"] for t in tasks))
    return {s: COLOURS[i % len(COLOURS)] for i, s in enumerate(stages)}


def answer(timeline: dict[str, Any]) -> str:
    """The paragraph answering "which step is serial?" (HTML)."""
    wall = timeline["wall"]
    alone = sorted((r for r in timeline["stage_profile"] if r["serial"] > 0), key=lambda r: -r["serial"])
    path = timeline["critical_path"]
    if not wall:
        return "<p>No task ran (every task was kept from an earlier run).</p>"
    parts = [f"Only one task ran during <b>{timeline['serial_share']:.0%}</b> of the wall time "
             f"({timeline['serial_share'] * wall:.2f} of {wall:.2f} s)"]
    if alone:
        parts.append(": " + ", ".join(f"<b>{escape(r['stage'])}</b> {r['serial']:.2f} s" for r in alone[:3]))
    parts.append(f". No task ran during {timeline['idle_share']:.0%} (the driver at work: planning the chains "
                 "after the partitions, scheduling). ")
    by_stage: dict[str, float] = {}
    for t in path["tasks"]:
        by_stage[t["stage"]] = by_stage.get(t["stage"], 0.0) + t["end"] - t["start"]
    parts.append(f"The critical path takes {path['seconds']:.2f} s ({path['seconds'] / wall:.0%} of the wall): "
                 + ", ".join(f"{escape(s)} {v:.2f} s" for s, v in sorted(by_stage.items(), key=lambda i: -i[1]))
                 + "; no number of workers makes the run shorter than that.")
    return "<p>" + "".join(parts) + "</p>"


def lanes(tasks: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Tasks packed into lanes, per worker (sorted by name): a task goes into the lane that ends with a task it
    waited for (a chain's steps stay together), else the worker's first lane that is free at its start (a worker
    with several threads gets several lanes)."""
    per_worker: dict[str, list[list[dict[str, Any]]]] = {}
    for task in sorted(tasks, key=lambda t: (t["start"], t["end"], t["task"])):
        rows = per_worker.setdefault(str(task["worker"]), [])
        free = [r for r in rows if r[-1]["end"] <= task["start"]]
        row = next((r for r in free if r[-1]["task"] in task.get("deps", ())), free[0] if free else None)
        if row is None:
            rows.append([task])
        else:
            row.append(task)
    return [(w, row) for w in sorted(per_worker, key=_natural) for row in per_worker[w]]


def _natural(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def gantt(tasks: list[dict[str, Any]], wall: float, colours: dict[str, str], critical: set[str]) -> str:
    """The Gantt chart as inline SVG: a lane per worker thread, a bar per task with its facts as a tooltip."""
    rows = lanes(tasks)
    scale = (WIDTH - LABEL) / wall if wall > 0 else 0.0
    height = ROW * len(rows) + 24
    out = [f'<svg class="gantt" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img">']
    for second in ticks(wall):
        x = LABEL + second * scale
        out.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}" class="tick"/>'
                   f'<text x="{x:.1f}" y="{height - 6}" class="axis">{second:g} s</text>')
    previous = None
    for i, (worker, row) in enumerate(rows):
        y = i * ROW
        if worker != previous:
            out.append(f'<text x="0" y="{y + ROW - 3}" class="worker">{escape(worker)}</text>')
            previous = worker
        for t in row:
            width = max((t["end"] - t["start"]) * scale, 0.5)
            where = f" · tile {t['tile']}" if t["tile"] else f" · item {t['item']}" if t["item"] else ""
            title = (f"{t['task']} · {t['stage']}{where} · "
                     f"{t['start']:.3f}–{t['end']:.3f} s ({t['end'] - t['start']:.3f} s) · worker {worker}")
            css = ' class="crit"' if t["task"] in critical else ""
            out.append(f'<rect x="{LABEL + t["start"] * scale:.1f}" y="{y + 1}" width="{width:.1f}" '
                       f'height="{ROW - 2}" fill="{colours[t["stage"]]}"{css}><title>{escape(title)}</title></rect>')
    out.append("</svg>")
    return "\n".join(out)


def ticks(wall: float) -> list[float]:
    """About ten round tick positions (seconds) from 0 to ``wall``."""
    if wall <= 0:
        return [0.0]
    step = next(s * 10.0 ** e for e in range(-3, 7) for s in (1, 2, 5) if wall / (s * 10.0 ** e) <= 10)
    return [round(i * step, 3) for i in range(int(wall / step) + 1)]


def stage_table(rows: list[dict[str, Any]], wall: float) -> str:
    """The per-stage table (HTML)."""
    head = ("stage", "tasks", "busy s", "CPU s", "points", "points/s", "alone s", "alone % of wall",
            "on critical path s")
    body = [(escape(r["stage"]), r["tasks"], f"{r['busy']:.2f}", f"{r['cpu']:.2f}", f"{r['points']:,}" if r["points"]
             else "", f"{r['points_per_s']:,}" if r["points_per_s"] else "", f"{r['serial']:.2f}",
             f"{r['serial'] / wall:.0%}" if wall else "", f"{r['critical']:.2f}") for r in rows]
    return _table(head, body, 1)


def path_table(path: dict[str, Any], items: dict[str, str]) -> str:
    """The critical path, task by task, with each task's tile or item (``items`` by task key) (HTML)."""
    body = [(escape(t["task"]), escape(t["stage"]), escape(t["tile"] or items.get(t["task"], "")), f"{t['start']:.3f}",
             f"{t['end']:.3f}", f"{t['end'] - t['start']:.3f}") for t in path["tasks"]]
    return _table(("task", "stage", "tile / item", "start s", "end s", "seconds"), body, 3)


def _table(head: tuple[str, ...], body: list[tuple[Any, ...]], text: int) -> str:
    """An HTML table whose first ``text`` columns are text (left-aligned), the others numbers."""
    def row(cells: tuple[Any, ...], tag: str) -> str:
        return "<tr>" + "".join(f'<{tag}{" class=t" if i < text else ""}>{v}</{tag}>' for i, v in enumerate(cells)) \
            + "</tr>\n"
    return "<table>" + row(head, "th") + "".join(row(r, "td") for r in body) + "</table>"
