"""Every command is a job: the job templates of ``cim ground``, ``cim dtm``, ``cim buildings``, ``cim tiles``,
``cim panoramas``, and :func:`execute`, the one way a command runs a job (the runner, resume, progress bar,
``report.json`` and ``cim.log`` of ``cim run``).

A template is a job document (the dict a TOML job file parses to) with the stages and defaults a ``cim run`` job
would have. :data:`STAGE_OPTIONS` says which stage option each command option sets; a test keeps the commands'
defaults equal to the stages' defaults, or to the template's own value listed in :data:`TEMPLATE_DEFAULTS`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cim.cli.app import EXIT_TASKS_FAILED
from cim.errors import CimError
from cim.fileutil import write_text_atomic

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cim.pipeline.execute import JobRun
    from cim.pipeline.job import Job

console = Console()

# options every job command shares with ``cim run``
Workers = Annotated[Optional[int], typer.Option("--workers", help="local worker processes (default: cores)")]
Scheduler = Annotated[Optional[str], typer.Option(
    "--scheduler", help="Dask scheduler address (tcp://host:port), 'threads' or 'processes' (the default: local "
                        "worker processes)")]
Force = Annotated[bool, typer.Option("--force", help="re-run every task, ignoring the manifest")]
TileSize = Annotated[float, typer.Option("--tile-size", help="processing tile edge (CRS units)")]
Profile = Annotated[bool, typer.Option("--profile", help="also write OUT/profile.html: the run's timeline per worker, "
                                                         "critical path and serial share")]

#: command -> {command option: (stage, stage option)}
STAGE_OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "ground": {"backend": ("classify.ground", "backend"), "tile_size": ("tile", "size"), "buffer": ("tile", "buffer")},
    "dtm": {"resolution": ("raster.dtm", "resolution"), "tile_size": ("tile", "size"), "buffer": ("tile", "buffer")},
    "buildings": {"lod1_percentile": ("buildings.lod2", "lod1_percentile"),
                  "dtm_resolution": ("raster.dtm", "resolution"), "tile_size": ("tile", "size"),
                  "buffer": ("tile", "buffer")},
    "tiles": {"tile_size": ("tile", "size"), "leaf_points": ("tiles.pointcloud", "leaf_points"),
              "error_scale": ("tiles.pointcloud", "error_scale"), "color_depth": ("tiles.pointcloud", "color_depth"),
              "allow_ballpark": ("tiles.pointcloud", "allow_ballpark"), "implicit": ("tiles.pointcloud", "implicit"),
              "meshopt": ("tiles.pointcloud", "meshopt"), "chunk_size": ("read.las", "chunk_size")},
    "panoramas": {"tile_size": ("tile", "size"), "buffer": ("tile", "buffer"),
                  "detect_width": ("panoramas.publish", "detect_width"),
                  "fine_width": ("panoramas.publish", "fine_width"), "time_base": ("panoramas.publish", "time_base"),
                  "angles": ("panoramas.publish", "angles")},
}

#: command -> {command option: the template's own default where it differs from the stage's, and why}
TEMPLATE_DEFAULTS: dict[str, dict[str, Any]] = {
    "ground": {"buffer": 30.0},  # SMRF needs context across file edges
    "panoramas": {"buffer": 30.0},  # = max_range: every occluder between a point and its panorama is seen
    "dtm": {"buffer": 30.0},  # TIN-filled gaps near the tile edge see the neighbours' ground
    "buildings": {"buffer": 40.0},  # buildings reaching further are modelled after the tiles (cim.buildings.large)
}


def input_files(inputs: list[Path]) -> list[str]:
    """The command's input arguments for ``read.las``: existing files made absolute, patterns kept."""
    return [str(Path(p).resolve()) if Path(p).exists() else str(p) for p in inputs]


def _job(name: str, out: Path, crs: str | None, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job": {"name": name, "output": str(out), **({"crs": crs} if crs else {})}, "stages": stages}


def _read(files: list[str], **options: Any) -> list[dict[str, Any]]:
    return [{"type": "read.las", "files": files, **options}]


def ground_job(files: list[str], out: Path, *, crs: str | None = None, backend: str = "smrf", objects: bool = False,
               tile_size: float = 250.0, buffer: float = 30.0, copc: bool = False) -> dict[str, Any]:
    """``cim ground``: noise (7/18), ground (2) and optionally objects, each input written back under its name
    (``<stem>.laz``, or ``<stem>.copc.laz`` with ``copc``)."""
    stages = [*_read(files), {"type": "tile", "size": tile_size, "buffer": buffer}, {"type": "filter.outliers"},
              {"type": "classify.ground", "backend": backend}]
    if objects:
        stages.append({"type": "classify.objects"})
    stages.append({"type": "write.las", "folder": "", "per_source": True, **({"copc": True} if copc else {})})
    return _job("ground", out, crs, stages)


def dtm_job(files: list[str], out: Path, *, crs: str | None = None, resolution: float = 0.5, classify: str = "auto",
            tile_size: float = 250.0, buffer: float = 30.0) -> dict[str, Any]:
    """``cim dtm``: DTM, DSM, nDSM and density COGs per tile plus VRT mosaics (ground classified unless 'never')."""
    stages = [*_read(files), {"type": "tile", "size": tile_size, "buffer": buffer}]
    if classify != "never":
        stages += [{"type": "filter.outliers"}, {"type": "classify.ground", "mode": "auto" if classify == "auto"
                                                 else "always"}]
    stages += [{"type": f"raster.{k}", "resolution": resolution} for k in ("dtm", "dsm", "ndsm", "density")]
    return _job("dtm", out, crs, stages)


def buildings_job(files: list[str], out: Path, *, crs: str | None = None, need_ground: bool = False,
                  need_objects: bool = False, classify: str = "auto", lod1_only: bool = False,
                  lod1_percentile: float = 70.0, footprints: Path | None = None, footprints_crs: str | None = None,
                  id_field: str | None = None, dtm: Path | None = None, write_dtm: bool = True,
                  dtm_resolution: float = 0.5, tile_size: float = 250.0, buffer: float = 40.0,
                  tiles: bool = True, formats: tuple[str, ...] = ("cityjson",)) -> dict[str, Any]:
    """``cim buildings``: classes when missing, DTM, LoD1.2/LoD2.2, model files (``write.<format>``) and 3D
    Tiles."""
    stage: dict[str, Any] = {"type": "buildings.lod1" if lod1_only else "buildings.lod2",
                             "lod1_percentile": lod1_percentile,
                             "classify": "never" if need_ground or classify == "never" else "auto"}
    if dtm is not None:
        stage["dtm"] = str(dtm.resolve())
    if footprints is not None:
        stage["footprints"] = str(footprints.resolve())
        stage.update({k: v for k, v in (("footprints_crs", footprints_crs), ("id_field", id_field)) if v})
    stages = [*_read(files), {"type": "tile", "size": tile_size, "buffer": buffer}]
    if need_ground:
        stages.append({"type": "classify.ground", "mode": "auto"})
    if need_objects:
        stages.append({"type": "classify.objects"})
    if write_dtm:
        stages.append({"type": "raster.dtm", "resolution": dtm_resolution})
    stages += [stage, *({"type": f"write.{f}"} for f in sorted(set(formats)))]
    if tiles:
        stages.append({"type": "tiles.buildings"})
    return _job("buildings", out, crs, stages)


def tiles_job(files: list[str], out: Path, *, crs: str | None = None, chunk_size: int = 1_000_000,
              tile_size: float = 250.0, **tiles_options: Any) -> dict[str, Any]:
    """``cim tiles``: a 3D Tiles 1.1 point-cloud tileset in the output folder (``tiles_options``: the stage's)."""
    return _job("tiles", out, crs, [*_read(files, chunk_size=chunk_size), {"type": "tile", "size": tile_size,
                                                                              "buffer": 0.0},
                                    {"type": "tiles.pointcloud", "folder": "", **tiles_options}])


def panoramas_job(poses: Path, images: Path, out: Path, *, crs: str = "EPSG:25832+7837",
                  trajectory: Path | None = None, points: list[str] = (), tile_size: float = 250.0,
                  buffer: float = 30.0, **publish_options: Any) -> dict[str, Any]:
    """``cim panoramas``: georeference, anonymize and publish the drive's panoramas (one task per image;
    ``publish_options``: the ``panoramas.publish`` stage's, None for its default). With ``points`` also a depth map
    per panorama and each point file coloured from the anonymized panoramas, written back as
    ``colorized/<name>.laz``."""
    stage: dict[str, Any] = {"type": "panoramas.publish", "poses": str(Path(poses).resolve()),
                             "images": str(Path(images).resolve())}
    if trajectory is not None:
        stage["trajectory"] = str(Path(trajectory).resolve())
    if points:
        stage["points"] = list(points)
    stage.update({k: v for k, v in publish_options.items() if v is not None})
    if not points:
        return _job("panoramas", out, crs, [stage])
    return _job("panoramas", out, crs, [*_read(list(points)), {"type": "tile", "size": tile_size, "buffer": buffer},
                                        stage, {"type": "panoramas.colorize"},
                                        {"type": "write.las", "folder": "colorized", "per_source": True}])


def start_workers_early(scheduler: str | None, stages: Iterable[str]) -> None:
    """For local worker processes: start the server they are forked from now, with the modules of the job's
    ``stages`` (their names), so that its imports run while the driver reads and plans the job
    (:func:`cim.runner.cluster.start_forkserver`)."""
    if scheduler in (None, "processes", "local"):
        from cim.pipeline.stage import worker_modules
        from cim.runner.cluster import start_forkserver

        start_forkserver(worker_modules(stages))


def execute(job: Job, *, scheduler: str | None = None, workers: int | None = None, force: bool = False,
            keep_going: bool = False, crs: str | None = None, show: bool = True,
            profile: bool = False) -> tuple[dict[str, Any], JobRun]:
    """Run ``job`` as ``cim run`` does: log to ``cim.log``, show progress, write ``report.json`` (and with
    ``profile`` ``profile.html``, see :mod:`cim.profile`), print the report (unless not ``show``); returns the
    report and the run, or exits with code 1 when tasks failed."""
    start_workers_early(scheduler, [s.name for s in job.stages])
    from cim import guards, outlock
    from cim.pipeline.execute import outcome_line, run_job, summarize

    created = not job.out_dir.exists()
    outlock.claim(job.out_dir)  # made, locked until the process ends (a second run is refused), Dask's scratch inside
    handler = logging.FileHandler(job.out_dir / "cim.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("cim")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("job %s from %s -> %s", job.name, job.source, job.out_dir)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False,
                      disable=not (show and console.is_terminal)) as progress:
            bars: dict[str, Any] = {}

            def on_plan(total: int, phase: str) -> None:
                bars["current"] = progress.add_task(phase, total=total)

            def on_outcome(outcome: Any) -> None:
                logger.info(outcome_line(outcome))
                progress.advance(bars["current"])

            result = run_job(job, scheduler=None if scheduler == "processes" else scheduler, workers=workers,
                             force=force, keep_going=keep_going, crs_override=crs, on_outcome=on_outcome,
                             on_plan=on_plan)
        summary = summarize(result)
        write_text_atomic(job.out_dir / "report.json", json.dumps(summary, indent=2) + "\n")
        if profile:
            from cim.profile import write_profile

            write_profile(job.out_dir, summary)
    except CimError:
        logger.removeHandler(handler)
        handler.close()
        if created:  # a new job refused (bad input, impossible transformation) leaves no output folder behind
            shutil.rmtree(job.out_dir, ignore_errors=True)
        raise
    # any other exception keeps the log handler: the CLI writes the traceback into cim.log and names it
    logger.removeHandler(handler)
    handler.close()
    if show or not summary["ok"]:
        print_report(summary)
    if not summary["ok"]:
        raise typer.Exit(EXIT_TASKS_FAILED)
    guards.check_products(result)  # a stage that wrote nothing on any tile is an error, not an empty product
    return summary, result


def execute_template(document: dict[str, Any], **run_options: Any) -> tuple[dict[str, Any], JobRun]:
    """Validate a template's document (as if it were ``<output>/<name>.toml``) and :func:`execute` it."""
    from cim.pipeline.job import parse_job

    out = Path(document["job"]["output"])
    return execute(parse_job(document, out / f"{document['job']['name']}.toml"), **run_options)


def stage_stats(run: JobRun, stage: str) -> list[dict[str, Any]]:
    """The per-tile ``stats`` of ``stage``'s tasks in a run (done or skipped)."""
    return [o.result["stats"] for o in run.report.outcomes.values()
            if o.stage == stage and isinstance(o.result, dict) and "stats" in o.result]


def print_report(summary: dict[str, Any]) -> None:
    """The run report as a table of stages, then products, warnings and failures."""
    from cim.profile import work_done

    table = Table(title=f"job {summary['job']}: {work_done(summary)}, {summary['seconds']:.1f} s",
                  title_justify="left")
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
    for advice in summary.get("advice", []):
        console.print(f"[cyan]advice:[/] {advice}")
    for failure in summary["failures"]:
        console.print(f"[bold red]failed:[/] {failure['task']}: {failure['error']}")
    if summary["failures"]:
        console.print("Fix the input and run the same command again: finished tasks are kept.")
