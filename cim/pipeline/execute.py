"""Turn a validated job into runner tasks and run them: partition per input file, then (stage, tile) tasks,
each stage's global ``finish`` step and the STAC catalog.

Fingerprints chain: a tile task's fingerprint covers the fingerprint of the points it reads (the partition or
the last stage that changed the points) and its own stage options, so changing an option re-runs exactly the
tasks that depend on it.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

import cim
from cim import crs as crs_mod
from cim import crs_plan
from cim import guards
from cim.catalog import write_catalog
from cim.errors import ConfigError, InputError
from cim.fileutil import atomic_write, expand_patterns
from cim.io.readers import PointSource, in_crs, require_crs
from cim.pipeline.job import Job
from cim.pipeline.stage import JobContext, Product, Stage, TileContext
from cim.pipeline.withheld import run_stage
from cim.points import PointCloud
from cim.runner import Dep, Manifest, RunReport, Task, TaskOutcome, dask_client, file_fingerprint, fingerprint, run_tasks
from cim.stages.io import ReaderStage, TileOptions
from cim.tiling import PARTS_FORMAT, Tile, TileGrid, load_tile, partition_file, union_bounds

log = logging.getLogger("cim.pipeline")

WORK = ".cim"


@dataclass
class JobRun:
    """The outcome of ``cim run``: the report of both phases and the products written."""

    job: Job
    report: RunReport
    products: list[Product] = field(default_factory=list)
    tiles: int = 0
    empty_tiles: int = 0
    points: int = 0


# ---------------------------------------------------------------------------------------------------------------
# worker-side task functions (module level, so Dask can pickle them)


def partition_task(reader: ReaderStage, path: str, crs_wkt: str, work_crs_wkt: str, size: float, buffer: float,
                   parts_dir: str, out_dir: str, area: tuple | None, chunk_size: int,
                   input_index: int | None = None) -> dict[str, Any]:
    work_crs = pyproj.CRS.from_wkt(work_crs_wkt)
    source = in_crs(reader.open(Path(path), pyproj.CRS.from_wkt(crs_wkt)), work_crs)
    counts = partition_file(source, TileGrid(size, buffer), work_crs, Path(parts_dir), area=area,
                            chunk_size=chunk_size, input_index=input_index)
    return {"counts": counts, "outputs": [Path(parts_dir).relative_to(out_dir).as_posix()]}


def save_cloud(path: Path, cloud: PointCloud) -> None:
    """Store an intermediate cloud (uncompressed npz, written atomically)."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **cloud.data)


def load_cloud(path: Path, crs: pyproj.CRS) -> PointCloud:
    """Load an intermediate cloud written by :func:`save_cloud`."""
    with np.load(path) as arrays:
        return PointCloud({n: arrays[n] for n in arrays.files}, crs)


def tile_stage_task(stage: Stage, ctx: TileContext, source: tuple[str, Any], save_to: str | None,
                    *_deps: Any) -> dict[str, Any]:
    kind, where = source
    cloud = load_tile([Path(p) for p in where], ctx.tile, ctx.crs) if kind == "parts" else load_cloud(Path(where), ctx.crs)
    result = run_stage(stage, cloud, ctx)
    outputs = [p.path for p in result.products]
    if save_to is not None:
        out_cloud = result.cloud if result.cloud is not None else cloud
        save_cloud(Path(save_to), out_cloud)
        outputs.append(Path(save_to).relative_to(ctx.out_dir).as_posix())
    return {
        "tile": ctx.tile.key,
        "stats": result.stats,
        "products": [p.to_json() for p in result.products],
        "outputs": outputs,
        "warnings": ctx.warnings,
    }


def finish_task(stage: Stage, ctx: JobContext, tiles: int, *results: dict[str, Any]) -> dict[str, Any]:
    products = stage.finish(list(results[:tiles]), ctx)  # the rest are earlier stages' finishes it waits for
    return {"products": [p.to_json() for p in products], "outputs": [p.path for p in products]}


def catalog_task(name: str, out_dir: str, crs_wkt: str, datetime: str | None, *results: Any) -> dict[str, Any]:
    products = [Product.from_json(p) for r in results if isinstance(r, dict) for p in r.get("products", [])]
    path = write_catalog(Path(out_dir), name, products, pyproj.CRS.from_wkt(crs_wkt), datetime)
    return {"outputs": [Path(path).relative_to(out_dir).as_posix()], "items": len(products)}


# ---------------------------------------------------------------------------------------------------------------
# planning (driver side)


def _inputs(job: Job, crs_override: str | None) -> list[tuple[ReaderStage, PointSource]]:
    """Every input file opened by its reader stage."""
    sources = []
    for reader in (s for s in job.stages if isinstance(s, ReaderStage)):
        override = crs_override or reader.options.crs or job.crs
        sources += [(reader, reader.open(p, override)) for p in expand_patterns(reader.options.files)]
    return sources


def job_crs(sources: list[PointSource]) -> pyproj.CRS:
    """The one CRS all inputs share, or a clear error."""
    first = sources[0]
    crs = require_crs(first)
    for other in sources[1:]:
        other_crs = require_crs(other)
        if not other_crs.equals(crs, ignore_axis_order=True):
            raise InputError(
                other.path,
                f"CRS {crs_mod.describe(other_crs)} differs from {crs_mod.describe(crs)} of {first.path}; "
                "give one CRS for all inputs with --crs only if they really share it",
            )
    return crs


def _grid(job: Job) -> TileGrid:
    tilers = [s for s in job.stages if s.role == "tiler"]
    options = tilers[0].options if tilers else TileOptions()
    return TileGrid(options.size, options.buffer)


def run_job(
    job: Job,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    force: bool = False,
    keep_going: bool = False,
    crs_override: str | None = None,
    on_outcome: Any = None,
    on_plan: Any = None,
) -> JobRun:
    """Run a validated job end to end (see the module docstring)."""
    inputs = _inputs(job, crs_override)
    if not inputs:
        raise InputError(job.source, "the job's readers match no input files")
    crs = job_crs([source for _, source in inputs])
    crs = crs_plan.check_job(crs, job.stages, [s for _, s in inputs], job.accept_height_system)  # up front
    work_crs = crs_mod.resolve(job.output_crs) if job.output_crs else crs  # CrsError unless exact: before any work
    if job.output_crs:  # the products' placement (3D Tiles, panoramas) starts from the output CRS
        crs_plan.check_transformations(work_crs, crs_plan.job_needs(job.stages))
    sources = [in_crs(source, work_crs) for _, source in inputs]
    union = union_bounds([s.bounds for s in sources])
    grid = _grid(job)
    guards.check_plan(job, sources, work_crs, grid)
    out_dir = job.out_dir
    remove_stale_temporaries(out_dir)
    work = out_dir / WORK
    manifest = Manifest(work / "manifest.jsonl")
    acquired = job.datetime or _acquired(sources)
    context = JobContext(job.name, out_dir, work_crs, grid, acquired=acquired,
                         inputs=tuple(str(s.path.resolve()) for s in sources), skip_withheld=_skip_withheld(job))
    version = cim.__version__
    numbered = any(getattr(s, "needs_input_index", False) for s in job.stages)

    partition: list[Task] = []
    for i, (reader, source) in enumerate(inputs):
        parts_dir = work / "parts" / f"{i:04d}-{source.path.stem}"
        index = i if numbered else None
        fp = fingerprint("partition", PARTS_FORMAT, version, file_fingerprint(source.path), crs.to_wkt(),
                         *([work_crs.to_wkt()] if work_crs is not crs else []), grid.size, grid.buffer, job.area,
                         str(parts_dir), *([index] if numbered else []),
                         *([] if context.skip_withheld else ["withheld kept"]))
        partition.append(Task(f"partition/{i:04d}-{source.path.stem}", "tile", partition_task,
                              (reader, str(source.path), crs.to_wkt(), work_crs.to_wkt(), grid.size, grid.buffer,
                               str(parts_dir), str(out_dir), job.area, _chunk(job), index), fp))

    with dask_client(scheduler, workers) as client:
        if on_plan:
            on_plan(len(partition), "partition")
        first = run_tasks(partition, client, manifest, out_dir=out_dir, force=force, keep_going=keep_going,
                          on_outcome=on_outcome)
        if not first.ok:  # never build tiles from a partial set of inputs
            return JobRun(job, first)
        counts: dict[str, int] = {}
        for task in partition:
            outcome = first.outcomes[task.key]
            if outcome.status in ("done", "skipped"):
                for key, n in outcome.result["counts"].items():
                    counts[key] = counts.get(key, 0) + n
        parts_dirs = [str(work / "parts" / Path(t.key).name) for t in partition
                      if first.outcomes[t.key].status in ("done", "skipped")]
        part_fps = [t.fingerprint for t in partition]
        tiles = [grid.tile_from_key(k) for k in sorted(counts, key=_tile_order) if counts[k] > 0]
        if not tiles:
            raise InputError(job.source, "no points inside the job area (check [job].area and the inputs)")
        all_tiles = grid.tiles_covering(union)
        tasks = _tile_tasks(job, context, tiles, parts_dirs, part_fps, version)
        if on_plan:
            on_plan(len(tasks), "stages")
        second = run_tasks(tasks, client, manifest, out_dir=out_dir, force=force, keep_going=keep_going,
                           on_outcome=on_outcome)

    report = RunReport({**first.outcomes, **second.outcomes}, first.seconds + second.seconds)
    products = [Product.from_json(p) for o in report.outcomes.values() if isinstance(o.result, dict)
                for p in o.result.get("products", []) if isinstance(p, dict)]
    return JobRun(job, report, products, len(tiles), max(0, len(all_tiles) - len(tiles)), sum(counts.values()))


_TEMPORARY = re.compile(r"^\..+(\.[0-9a-f]{8}\.tmp(\.[^.]+)?|_[0-9a-f]{8}_tmp)$")


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporaries a killed run left behind (names made by :mod:`cim.fileutil`)."""
    if not out_dir.exists():
        return
    for path in sorted(out_dir.rglob(".*"), reverse=True):
        if _TEMPORARY.match(path.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _acquired(sources: list[PointSource]) -> str | None:
    """The earliest creation date the inputs' headers state (ISO 8601), for the catalog's items."""
    dates = [s.acquired for s in sources if s.acquired]
    return f"{min(dates).isoformat()}T00:00:00Z" if dates else None


def _skip_withheld(job: Job) -> bool:
    """Whether withheld points are left out of processing: the readers' ``withheld`` option, which they share."""
    readers = [(i, s) for i, s in enumerate(job.stages) if s.role == "reader"]
    choices = {getattr(s.options, "withheld", "skip") for _, s in readers}
    if len(choices) > 1:
        raise ConfigError(f"stages[{readers[-1][0]}].withheld", "all readers of a job must agree on withheld "
                          "points ('skip' or 'keep')", job.source)
    return choices != {"keep"}


def _chunk(job: Job) -> int:
    readers = [s for s in job.stages if isinstance(s, ReaderStage)]
    return min(r.options.chunk_size for r in readers)


def _tile_order(key: str) -> tuple[int, int]:
    ix, iy = (int(v) for v in key.split("_"))
    return (iy, ix)


def _tile_tasks(job: Job, context: JobContext, tiles: list[Tile], parts_dirs: list[str], part_fps: list[str],
                version: str) -> list[Task]:
    """(stage, tile) tasks, each stage's finish, and the catalog.

    A task depends on the task that produced its points and on the earlier tasks of the same tile whose products
    it reads (``Stage.uses``: the producers of its artefacts, wired by the job). Its fingerprint covers the
    same, so changing an option re-runs exactly the tasks downstream of it.
    """
    tasks: list[Task] = []
    work = context.out_dir / WORK / "work"
    stage_list = [s for s in job.stages if s.role == "tile"]
    # per tile: where its current points come from, that source's fingerprint and the task that made it
    sources = {t.key: (("parts", parts_dirs), fingerprint("tile", part_fps, t.key), None) for t in tiles}
    earlier: dict[str, list[Task]] = {t.key: [] for t in tiles}  # earlier tile tasks, per tile
    finishes: list[Task] = []
    for i, stage in enumerate(stage_list):
        label = f"{i:02d}-{stage.name}"
        options = stage.options.model_dump(mode="json")
        uses = stage.uses
        tile_tasks = []
        for tile in tiles:
            source, source_fp, producer = sources[tile.key]
            used = [t for t in earlier[tile.key] if t.stage in uses]
            dep_keys = list(dict.fromkeys(([producer] if producer else []) + [t.key for t in used]))
            fp = fingerprint(version, stage.name, options, source_fp, [t.fingerprint for t in used])
            save_to = str(work / label / f"{tile.key}.npz") if stage.modifies_points else None
            ctx = TileContext(context.name, context.out_dir, context.crs, context.grid, stage.folder,
                              context.acquired, context.inputs, context.skip_withheld, tile=tile)
            task = Task(f"{label}/{tile.key}", stage.name, tile_stage_task,
                        (stage, ctx, source, save_to, *[Dep(k) for k in dep_keys]), fp)
            tile_tasks.append(task)
            earlier[tile.key].append(task)
            if stage.modifies_points:
                sources[tile.key] = (("cloud", save_to), fp, task.key)
        tasks += tile_tasks
        if stage.has_finish():
            used_finishes = [t for t in finishes if t.stage in uses]
            stage_ctx = JobContext(context.name, context.out_dir, context.crs, context.grid, stage.folder,
                                   context.acquired, context.inputs, context.skip_withheld)
            finish = Task(f"{label}/finish", stage.name, finish_task,
                          (stage, stage_ctx, len(tile_tasks), *[Dep(t.key) for t in tile_tasks + used_finishes]),
                          fingerprint(version, stage.name, options, [t.fingerprint for t in tile_tasks + used_finishes]))
            tasks.append(finish)
            finishes.append(finish)
    catalog_fp = fingerprint(version, "catalog", [t.fingerprint for t in tasks], context.acquired)
    tasks.append(Task("catalog", "catalog", catalog_task,
                      (job.name, str(context.out_dir), context.crs.to_wkt(), context.acquired,
                       *[Dep(t.key) for t in tasks]), catalog_fp))
    return tasks


def run(job_file: str | Path, *, out: str | Path | None = None, scheduler: str | None = "threads",
        workers: int | None = None, force: bool = False, keep_going: bool = False,
        crs: str | None = None) -> JobRun:
    """Python API of ``cim run``: validate and run a job file; defaults to an in-process Dask cluster."""
    from cim.pipeline.job import load_job

    job = load_job(job_file, {"output": str(Path(out).resolve()) if out else None})
    return run_job(job, scheduler=scheduler, workers=workers, force=force, keep_going=keep_going,
                   crs_override=crs)


def summarize(run: JobRun) -> dict[str, Any]:
    """The run report as JSON: tiles, points, products, time per stage, warnings, failures."""
    report = run.report
    return {
        "job": run.job.name,
        "output": str(run.job.out_dir),
        "ok": report.ok,
        "tiles": run.tiles,
        "empty_tiles": run.empty_tiles,
        "points": run.points,
        "seconds": round(report.seconds, 3),
        "stages": report.stage_table(),
        "products": sorted(p.path for p in run.products),
        "warnings": report.warnings,
        "failures": [{"task": o.key, "error": o.error} for o in report.by_status("failed")],
    }


def outcome_line(outcome: TaskOutcome) -> str:
    """One log line for a finished task."""
    return f"{outcome.status:9s} {outcome.key} ({outcome.seconds:.2f} s){' ' + outcome.error if outcome.error else ''}"
