"""``cim info``, ``cim run``, ``cim stages`` and ``cim clean``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from cim.cli.jobs import Force, Profile, Scheduler, Workers

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
    out_crs: Annotated[Optional[str], typer.Option(
        "--out-crs", help="process and write in this CRS (exact transformations only; overrides [job].output_crs)")]
    = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    force: Force = False,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="finish the other tiles when one fails")] = False,
    max_tiles: Annotated[Optional[int], typer.Option(
        "--max-tiles", help="refuse jobs with more tiles (100000)")] = None,
    max_tile_cells: Annotated[Optional[float], typer.Option(
        "--max-tile-cells", help="refuse rasters with more cells per tile (1e8)")] = None,
    profile: Profile = False,
) -> None:
    """Run a pipeline of named stages over tiles on Dask (resumable: re-run to continue)."""
    from cim.cli.jobs import execute, start_workers_early
    from cim.pipeline.job import declared_stage_names, parse_job, read_job_document

    document = read_job_document(job_file)
    start_workers_early(scheduler, declared_stage_names(document))  # the workers' imports overlap validation
    job = parse_job(document, job_file, {"output": str(Path(out).resolve()) if out else None, "output_crs": out_crs,
                                         "max_tiles": max_tiles, "max_tile_cells": max_tile_cells})
    execute(job, scheduler=scheduler, workers=workers, force=force, keep_going=keep_going, crs=crs, profile=profile)


def clean(
    out: Annotated[Path, typer.Argument(help="output folder of a finished job")],
    force: Annotated[bool, typer.Option("--force", help="also when the job has not finished (it restarts "
                                                        "from scratch)")] = False,
) -> None:
    """Remove the work folder (.cim: parts, intermediate clouds, manifest) of a finished job; products stay."""
    import shutil

    from cim.errors import InputError
    from cim.pipeline.execute import WORK

    work = out / WORK
    if not work.is_dir():
        raise InputError(out, f"no work folder {WORK} here (not a job's output folder, or already cleaned)")
    report = out / "report.json"
    finished = report.is_file() and json.loads(report.read_text(encoding="utf-8")).get("ok") is True
    if not finished and not force:
        raise InputError(out, "the job has not finished (no successful report.json): its work folder lets it "
                              "resume; use --force to remove it anyway")
    freed = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    shutil.rmtree(work)
    console.print(f"removed {work}: {freed / 1e6:.1f} MB freed")


def stages(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the stages a job can use, with their options and defaults."""
    from cim.pipeline.stage import registry

    catalogue = {
        name: {"summary": cls.summary, "role": cls.role, "produces": list(cls.produces), "consumes": list(cls.consumes),
               "reuses": list(cls.reuses), "options": cls.Options.model_json_schema().get("properties", {})}
        for name, cls in registry().items()
    }
    if as_json:
        sys.stdout.write(json.dumps(catalogue, indent=2) + "\n")
        return
    for name, entry in catalogue.items():
        console.print(f"[bold]{name}[/]  {entry['summary']}", soft_wrap=True)
        flows = [f"{k} {', '.join(entry[k])}" for k in ("consumes", "reuses", "produces") if entry[k]]
        if flows:
            console.print(f"    [italic]{'; '.join(flows)}[/]", soft_wrap=True, highlight=False)
        for option, spec in entry["options"].items():
            default = spec.get("default", "required")
            console.print(f"    {option} = {json.dumps(default)}  [dim]{spec.get('description', '')}[/]",
                          soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(run)
    app.command()(stages)
    app.command()(clean)
