"""``cim info``, ``cim run`` and ``cim stages``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cim.cli.app import EXIT_TASKS_FAILED
from cim.fileutil import write_text_atomic

console = Console()

CrsOption = Annotated[
    Optional[str], typer.Option("--crs", help="CRS of the input points, overriding the files' (e.g. EPSG:7415)")
]


def info(
    files: Annotated[list[Path], typer.Argument(help="LAS/LAZ/COPC files")],
    crs: CrsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Header, CRS, classes, returns, density and GPS time of point-cloud files."""
    from cim.info import file_info

    facts = [file_info(f, crs) for f in files]
    if as_json:
        sys.stdout.write(json.dumps(facts if len(facts) > 1 else facts[0], indent=2) + "\n")
        return
    for fact in facts:
        _print_info(fact)


def _print_info(fact: dict[str, Any]) -> None:
    table = Table(title=fact["file"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    crs = fact["crs"]
    b = fact["bounds"]
    rows = [
        ("format", f"{fact['format']} {fact['version']}, point format {fact['point_format']}"),
        ("points", f"{fact['point_count']:,}"),
        ("bounds min", "  ".join(f"{v:.3f}" for v in b["min"]) if b else "-"),
        ("bounds max", "  ".join(f"{v:.3f}" for v in b["max"]) if b else "-"),
        ("scale / offset", f"{fact['scale']} / {fact['offset']}"),
        ("CRS", f"{crs.get('code') or crs.get('name') or 'none'} (from {crs['source']})"),
        ("horizontal", crs["horizontal"] or "-"),
        ("vertical", crs["vertical"] or "-"),
        ("classes", ", ".join(f"{c}: {n:,}" for c, n in fact["classification"].items()) or "-"),
        ("returns", ", ".join(f"{r}: {n:,}" for r, n in fact["returns"].items()) or "-"),
        ("density", f"{fact['density']['occupied_points_per_m2']} pts/m² (occupied 1 m cells), "
                    f"{fact['density']['bbox_points_per_m2']} pts/m² (bounding box)"),
        ("GPS time", " – ".join(f"{t:.3f}" for t in fact["gps_time"]) + f" ({fact['gps_time_type']})"
         if fact["gps_time"] else "-"),
        ("extra dims", ", ".join(fact["extra_dimensions"]) or "-"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for warning in fact["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}")


def run(
    job_file: Annotated[Path, typer.Argument(help="job description (TOML)")],
    out: Annotated[Optional[str], typer.Option("--out", help="output folder (overrides [job].output)")] = None,
    crs: CrsOption = None,
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="Dask scheduler address (tcp://host:port), or 'threads'; default: local processes")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="local worker processes (default: cores)")] = None,
    force: Annotated[bool, typer.Option("--force", help="re-run every task, ignoring the manifest")] = False,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="finish the other tiles when one fails")] = False,
    max_tiles: Annotated[Optional[int], typer.Option(
        "--max-tiles", help="refuse jobs with more tiles (100000)")] = None,
    max_tile_cells: Annotated[Optional[float], typer.Option(
        "--max-tile-cells", help="refuse rasters with more cells per tile (1e8)")] = None,
) -> None:
    """Run a pipeline of named stages over tiles on Dask (resumable: re-run to continue)."""
    from cim import guards, outlock
    from cim.pipeline.execute import outcome_line, run_job, summarize
    from cim.pipeline.job import load_job

    job = load_job(job_file, {"output": str(Path(out).resolve()) if out else None, "max_tiles": max_tiles,
                              "max_tile_cells": max_tile_cells})
    outlock.claim(job.out_dir)  # made, locked until the process ends, Dask's scratch inside it
    handler = logging.FileHandler(job.out_dir / "cim.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("cim")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("job %s from %s -> %s", job.name, job_file, job.out_dir)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as progress:
        bars: dict[str, Any] = {}

        def on_plan(total: int, phase: str) -> None:
            bars[phase] = progress.add_task(phase, total=total)
            bars["current"] = bars[phase]

        def on_outcome(outcome: Any) -> None:
            logger.info(outcome_line(outcome))
            progress.advance(bars["current"])

        result = run_job(job, scheduler=scheduler, workers=workers, force=force, keep_going=keep_going,
                         crs_override=crs, on_outcome=on_outcome, on_plan=on_plan)
    summary = summarize(result)
    write_text_atomic(job.out_dir / "report.json", json.dumps(summary, indent=2) + "\n")
    logger.removeHandler(handler)
    handler.close()
    _print_report(summary)
    if not summary["ok"]:
        raise typer.Exit(EXIT_TASKS_FAILED)
    guards.check_products(result)


def _print_report(summary: dict[str, Any]) -> None:
    table = Table(title=f"job {summary['job']}: {summary['tiles']} tiles, {summary['points']:,} points, "
                        f"{summary['seconds']:.1f} s", title_justify="left")
    for column in ("stage", "done", "skipped", "failed", "cancelled", "seconds"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in summary["stages"]:
        table.add_row(row["stage"], str(row["done"]), str(row["skipped"]), str(row["failed"]), str(row["cancelled"]),
                      f"{row['seconds']:.1f}")
    console.print(table)
    console.print(f"{len(summary['products'])} products in [bold]{summary['output']}[/] "
                  f"(catalog: stac/catalog.json, report: report.json, log: cim.log)")
    for warning in summary["warnings"][:20]:
        console.print(f"[yellow]warning:[/] {warning}")
    for failure in summary["failures"]:
        console.print(f"[bold red]failed:[/] {failure['task']}: {failure['error']}")
    if summary["failures"]:
        console.print("Fix the input and run the same command again: finished tasks are kept.")


def stages(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the stages a job can use, with their options and defaults."""
    from cim.pipeline.stage import registry

    catalogue = {
        name: {"summary": cls.summary, "role": cls.role, "options": cls.Options.model_json_schema().get("properties", {})}
        for name, cls in registry().items()
    }
    if as_json:
        sys.stdout.write(json.dumps(catalogue, indent=2) + "\n")
        return
    for name, entry in catalogue.items():
        console.print(f"[bold]{name}[/]  {entry['summary']}", soft_wrap=True)
        for option, spec in entry["options"].items():
            default = spec.get("default", "required")
            console.print(f"    {option} = {json.dumps(default)}  [dim]{spec.get('description', '')}[/]",
                          soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(run)
    app.command()(stages)
