"""Turn a validated job into runner tasks and run them: partition per input file, one chain task per tile that
runs the tile's stages one after the other on one in-memory cloud, each stage's global ``finish`` step and the
STAC catalog.

Checkpoints: the partition parts hold every tile's points; the only other copy of a tile's points is written
after the chain's last point-modifying stage, when a later stage of the chain exists (the columns that differ
from the parts, compressed: a class column for a classifier). A resume re-runs, per tile, exactly the steps
whose fingerprint changed or whose products are missing or changed (and the steps that depend on them), from
the checkpoint when they all come after it, else from the parts.

The tiles and chains are planned before the partition, from the inputs' header bounds
(:mod:`cim.pipeline.planned_tiles`), and submitted with the partition as one task graph: a chain waits only for
the partition tasks of the files whose header box meets its tile's 3 x 3 neighbourhood. When every chain would
wait for every partition task anyway (one file, or the ranges of one), the partition runs first and the chains are
planned from its counts, as before the planning from bounds: the tiles holding points, each reading the part
folders that hold points of its neighbourhood, ordered by the points they load (the header estimate is uniform
over a file), and no chain carrying every partition's result.

Fingerprints chain: a step's fingerprint covers the fingerprint of the points it reads (the partition or the
last step that changed the points), the fingerprints of the earlier steps whose products it uses, its options,
the contents of the files its options name and the code of its stage module (with every cim module it
imports). Stages with only a ``finish`` get no per-tile step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim import crs as crs_mod
from cim import crs_plan, guards
from cim.catalog import write_catalog
from cim.columns import append_frame, read_frames
from cim.errors import ConfigError, InputError
from cim.fileutil import atomic_write, expand_patterns
from cim.io.chunks import task_ranges
from cim.io.readers import PointSource, in_crs, require_crs
from cim.pipeline.items import ItemPhase, ItemStage, run_items
from cim.pipeline.planned_tiles import Span, check_inside, plan_tiles
from cim.pipeline.job import Job
from cim.pipeline.reduction import BlockFinish
from cim.pipeline.shared import shared_strings
from cim.pipeline.sizing import tile_advice
from cim.pipeline.stage import JobContext, Product, Stage, TileContext, TileResult
from cim.pipeline.withheld import run_stage
from cim.points import INPUT_INDEX, INPUT_POSITION, Bounds, PointCloud
from cim.runner import (Dep, Manifest, RunReport, Task, TaskOutcome, check_shared_storage, dask_client, fingerprint,
                        is_remote, run_tasks)
from cim.runner.fingerprints import CODE_IMPORTS, CodeHashes, ContentHashes, intact, stamp
from cim.runner.tasks import PartError, caught_warnings, describe
from cim.stages.io import ReaderStage, TileOptions
from cim.tiling import PARTS_FORMAT, Tile, TileGrid, load_tile, neighbourhood, partition_file, parts_of_tiles

log = logging.getLogger("cim.pipeline")

WORK = ".cim"


@dataclass
class JobRun:
    """The outcome of ``cim run``: the report of its tasks and the products written; ``tiles``: those holding
    points (planned tiles without any are left out, see :func:`_empty_records`)."""

    job: Job
    report: RunReport
    products: list[Product] = field(default_factory=list)
    tiles: int = 0
    empty_tiles: int = 0
    points: int = 0
    #: one line per sizing advice (a job with fewer tiles than workers: see :mod:`cim.pipeline.sizing`)
    advice: list[str] = field(default_factory=list)
    #: items of the item stages by what they are ("images": 12; :class:`cim.pipeline.items.ItemStage`)
    items: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One stage's run on one tile, inside the tile's chain task; ``key`` is its manifest key."""

    key: str
    stage: Stage
    fingerprint: str
    ctx: TileContext


# ---------------------------------------------------------------------------------------------------------------
# worker-side task functions (module level, so Dask can pickle them)


def partition_task(reader: ReaderStage, path: str, crs_wkt: str, work_crs_wkt: str, size: float, buffer: float,
                   parts_dir: str, out_dir: str, area: tuple | None, chunk_size: int,
                   quanta: dict[str, tuple[float, float]] | None, input_index: int | None = None,
                   points: range | None = None, covered: Span | None = None) -> dict[str, Any]:
    """Partition one file (or a range of its points) into ``parts_dir``; ``covered``: the tiles its header bounds
    meet, which the chains were planned with (points outside them fail the file, see
    :func:`cim.pipeline.planned_tiles.check_inside`)."""
    work_crs = pyproj.CRS.from_wkt(work_crs_wkt)
    source = in_crs(reader.open(Path(path), pyproj.CRS.from_wkt(crs_wkt)), work_crs)
    counts = partition_file(source, TileGrid(size, buffer), work_crs, Path(parts_dir), area=area,
                            chunk_size=chunk_size, quanta=quanta, input_index=input_index, points=points)
    if covered is not None:
        try:
            check_inside(path, covered, counts)
        except InputError:
            shutil.rmtree(parts_dir)  # no parts a resume could take for this file's
            raise
    return {"counts": counts, "points": sum(counts.values()),
            "outputs": [Path(parts_dir).relative_to(out_dir).as_posix()]}


def _column_digests(cloud: PointCloud) -> dict[str, str]:
    return {name: hashlib.sha256(np.ascontiguousarray(cloud[name]).view(np.uint8)).hexdigest()
            for name in cloud.names}


def save_checkpoint(path: Path, cloud: PointCloud, base_size: int, base_digests: dict[str, str]) -> None:
    """Store ``cloud`` compactly: the columns that differ from the tile as partitioned (``base_size`` points
    with these column digests) or, when the points themselves changed, every column."""
    digests = _column_digests(cloud) if len(cloud) == base_size else {}  # other points: no column is the same
    same_points = bool(digests) and all(base_digests.get(n) == digests[n] for n in "xyz")
    changed = [n for n in cloud.names if not same_points or base_digests.get(n) != digests[n]]
    meta = {"mode": "delta" if same_points else "full", "names": cloud.names}
    with atomic_write(path) as tmp:
        append_frame(tmp, {n: cloud[n] for n in changed}, meta)


def load_checkpoint(path: Path, base: PointCloud) -> PointCloud:
    """The cloud :func:`save_checkpoint` stored, completing a delta from ``base``."""
    meta, columns = next(read_frames(path))
    data = {n: columns[n] if n in columns else base[n] for n in meta["names"]}
    return PointCloud(data, base.crs)


def _read_only(cloud: PointCloud) -> PointCloud:
    """A view of ``cloud`` whose columns cannot be changed in place (for stages that do not modify points)."""
    views = {}
    for name in cloud.names:
        view = cloud[name].view()
        view.flags.writeable = False
        views[name] = view
    return PointCloud(views, cloud.crs)


def _run_step(step: Step, cloud: PointCloud) -> tuple[TileResult | None, PartError | None]:
    """The step's result, or the error naming it (raised by the caller outside this ``except``, so that no
    exception chain, which may not pickle, travels with it)."""
    try:
        return run_stage(step.stage, cloud if step.stage.modifies_points else _read_only(cloud), step.ctx), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported, with the step's key
        return None, PartError(step.key, describe(exc))


def chain_task(steps: list[Step], parts: list[str], checkpoint: str | None, resume: bool,
               save_after: str | None, dtypes: dict[str, np.dtype] | None = None,
               *partitions: dict[str, Any]) -> dict[str, Any]:
    """Run ``steps`` (one tile) on one in-memory cloud; ``parts``: the part folders that may hold its points,
    ``dtypes``: the dimensions of all the job's parts (see :func:`cim.tiling.load_tile`); ``resume``: start from
    the ``checkpoint`` file instead of the parts; ``save_after``: the key of the step after which the checkpoint
    is written; ``partitions``: the results of the partition tasks that wrote ``parts`` (one each, in order; none:
    every part is read): only those holding points of the tile's neighbourhood are read, and a tile whose core
    holds no point runs no step (see :func:`_empty_records`).

    Returns the steps' records for the manifest (with their start and end times, CPU seconds and the points they
    got), the time spent on loading and checkpointing the points, and the checkpoint's step (``after``), span and
    CPU seconds (None without one).
    """
    ctx = steps[0].ctx
    io_start = time.time()
    if partitions:
        if not any(p["counts"].get(ctx.tile.key) for p in partitions):
            return {"records": _empty_records(steps, io_start), "io_seconds": 0.0, "checkpoint": None}
        near = neighbourhood(ctx.tile)
        parts = [f for f, p in zip(parts, partitions) if any(p["counts"].get(k) for k in near)]
    base = load_tile([Path(p) for p in parts], ctx.tile, ctx.crs, dtypes)
    base_size, base_digests = len(base), _column_digests(base) if save_after else {}
    cloud = load_checkpoint(Path(checkpoint), base) if resume else base
    del base  # the cloud may be replaced by a stage: do not hold two copies
    io = time.time() - io_start
    records = []
    saved = None
    for step in steps:
        start, cpu, points = time.time(), time.process_time(), len(cloud)
        with caught_warnings() as messages:
            result, error = _run_step(step, cloud)
        if error is not None:
            raise error
        if step.stage.modifies_points and result.cloud is not None:
            cloud = result.cloud
        outputs = [p.path for p in result.products] + result.outputs
        stamps = stamp(outputs, ctx.out_dir)  # the step's own bookkeeping: inside its span
        end, step_cpu = time.time(), time.process_time() - cpu
        if step.key == save_after:
            save_cpu = time.process_time()
            save_checkpoint(Path(checkpoint), cloud, base_size, base_digests)
            saved_file = Path(checkpoint).relative_to(ctx.out_dir).as_posix()
            outputs.append(saved_file)
            stamps.update(stamp([saved_file], ctx.out_dir))
            saved = {"after": step.key, "span": [round(end, 6), round(time.time(), 6)],
                     "cpu": round(time.process_time() - save_cpu, 6)}
            io += saved["span"][1] - end
        records.append({"key": step.key, "fingerprint": step.fingerprint, "seconds": round(end - start, 6), "result": {
            "tile": ctx.tile.key,
            "stats": result.stats,
            "products": [p.to_json() for p in result.products],
            "outputs": outputs,
            "stamps": stamps,
            "warnings": [*step.ctx.warnings, *messages],
            "span": [round(start, 6), round(end, 6)],
            "cpu": round(step_cpu, 6),
            "points": points,
        }})
    return {"records": records, "io_seconds": round(io, 6), "checkpoint": saved}


def _empty_records(steps: list[Step], now: float) -> list[dict[str, Any]]:
    """The records of the steps of a tile whose core holds no point (planned from header bounds): no products,
    marked ``empty`` (the finishes, the report and a resume pass them over)."""
    tile = steps[0].ctx.tile.key
    return [{"key": s.key, "fingerprint": s.fingerprint, "seconds": 0.0, "result": {
        "tile": tile, "empty": True, "stats": {}, "products": [], "outputs": [], "stamps": {}, "warnings": [],
        "span": [round(now, 6), round(now, 6)], "cpu": 0.0, "points": 0}} for s in steps]


def _cleared_mark(out_dir: Path, stage: Stage) -> Path:
    """Present while the stage's scratch was cleared after its finish: a finish re-run needs every tile step."""
    return stage.scratch_dir(out_dir).with_name(f"{stage.label}.cleared")


def _step_results(keys: list[str], recorded: dict[str, Any], results: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The results of steps ``keys``: recorded ones, or records of chain tasks that ran now (in ``results``)."""
    found = dict(recorded)
    for result in results:
        if isinstance(result, dict):
            found.update({r["key"]: r["result"] for r in result.get("records", [])})
    return [found[k] for k in keys if not found[k].get("empty")]  # tiles without points have no results


def summary_task(stage: BlockFinish, ctx: JobContext, keys: list[str], recorded: dict[str, Any],
                 *results: Any) -> dict[str, Any]:
    """What every block of a tree-reduced finish needs to know of all tiles (see :mod:`cim.pipeline.reduction`)."""
    return {"summary": stage.finish_summary(_step_results(keys, recorded, results), ctx), "outputs": []}


def block_task(stage: BlockFinish, ctx: JobContext, block: str, keys: list[str], recorded: dict[str, Any],
               summary: dict[str, Any], *results: Any) -> dict[str, Any]:
    """One block's part of a tree-reduced finish from its own tiles' steps ``keys`` and the summary task's result
    (None when none of its tiles holds points)."""
    found = _step_results(keys, recorded, results)
    record = stage.finish_block(block, found, summary["summary"], ctx) if found else None
    return {"block": block, "record": record, "outputs": []}


def finish_task(stage: Stage, ctx: JobContext, keys: list[str], recorded: dict[str, Any], scratch: str | None,
                *results: Any) -> dict[str, Any]:
    """``stage.finish`` on the results of its steps ``keys``: recorded ones, or records of chain tasks that ran
    now (the other ``results`` are earlier finishes it waits for, or its blocks' records, which it merges). Then
    the stage's ``scratch`` folder, which only this finish reads, is removed (and marked so, see :class:`_Plan`)."""
    found = _step_results(keys, recorded, results)
    if isinstance(stage, BlockFinish):
        blocks = {r["block"]: r["record"] for r in results if isinstance(r, dict) and "block" in r}
        products = stage.finish_merge(found, blocks, ctx)
    else:
        products = stage.finish(found, ctx)
    if scratch is not None and Path(scratch).is_dir():
        _cleared_mark(ctx.out_dir, stage).touch()
        shutil.rmtree(scratch)
    outputs = [p.path for p in products]
    return {"products": [p.to_json() for p in products], "outputs": outputs, "stamps": stamp(outputs, ctx.out_dir)}


def catalog_task(name: str, out_dir: str, crs_wkt: str, datetime: str | None, recorded: list[dict[str, Any]],
                 *results: Any) -> dict[str, Any]:
    """The STAC catalog of the products of the recorded steps and of the tasks that ran now."""
    found = list(recorded)
    for result in results:
        if isinstance(result, dict):
            found += [*result.get("products", []), *(p for r in result.get("records", [])
                                                     for p in r["result"].get("products", []))]
    products = [Product.from_json(p) for p in found]
    path = write_catalog(Path(out_dir), name, products, pyproj.CRS.from_wkt(crs_wkt), datetime)
    outputs = [Path(path).relative_to(out_dir).as_posix()]
    return {"outputs": outputs, "items": len(products), "stamps": stamp(outputs, out_dir)}


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
    if all(s.role == "items" for s in job.stages):  # no points: item tasks, finishes, catalog
        from cim.pipeline.items import run_item_job

        return run_item_job(job, scheduler=scheduler, workers=workers, force=force, keep_going=keep_going,
                            on_outcome=on_outcome, on_plan=on_plan)
    inputs = _inputs(job, crs_override)
    if not inputs:
        raise InputError(job.source, "the job's readers match no input files")
    crs = job_crs([source for _, source in inputs])
    crs = crs_plan.check_job(crs, job.stages, [s for _, s in inputs], job.accept_height_system)  # up front
    work_crs = crs_mod.resolve(job.output_crs) if job.output_crs else crs  # in_crs: exact, else CrsError at planning
    if job.output_crs:  # the products' placement (3D Tiles, panoramas) starts from the output CRS
        crs_plan.check_transformations(work_crs, crs_plan.job_needs(job.stages))
    sources = [in_crs(source, work_crs) for _, source in inputs]
    grid = _grid(job)
    guards.check_plan(job, sources, work_crs, grid)
    out_dir = job.out_dir
    remove_stale_temporaries(out_dir)
    work = out_dir / WORK
    manifest = Manifest(work / "manifest.jsonl")
    acquired = job.datetime or _acquired(sources)
    context = JobContext(job.name, out_dir, work_crs, grid, acquired=acquired,
                         inputs=tuple(str(s.path.resolve()) for s in sources), skip_withheld=_skip_withheld(job),
                         force=force)
    for stage in job.stages:
        stage.plan(context)
    # every tile step's context names the inputs: shipped by reference, not once per task (see cim.pipeline.shared)
    context = dataclasses.replace(context, inputs=shared_strings(work / "inputs.json", context.inputs))
    hashes = ContentHashes(work / "hashes.json")
    code = CodeHashes(work / CODE_IMPORTS)
    numbered = any(s.needs_input_index for s in job.stages)

    reads: dict[str, tuple[Bounds, int]] = {}  # part folder -> the header bounds and points of what it reads
    planned: list[tuple[str, str, tuple[Any, ...]]] = []  # (task key, fingerprint, arguments but the tiles) per task
    partition_code = code.code_hash(partition_file.__module__)
    chunk = _chunk(job)
    for i, ((reader, source), digest) in enumerate(zip(inputs, hashes.digests([s.path for _, s in inputs]))):
        index = i if numbered else None
        quanta = _quanta(source) if work_crs is crs else None
        ranges = task_ranges(source, chunk, reader.options.task_points or chunk, job.area is not None)
        bounds = _with_rounding(sources[i].bounds, quanta)
        for k, points in enumerate(ranges or [None]):  # a large file: one task and parts folder per range
            name = f"{i:04d}-{source.path.stem}" + (f".{k:05d}" if ranges else "")  # names sort in file order
            parts_dir = work / "parts" / name
            fp = fingerprint("partition", PARTS_FORMAT, partition_code, code.code_hash(type(reader).__module__),
                             digest, crs.to_wkt(), *([work_crs.to_wkt()] if work_crs is not crs else []), grid.size,
                             grid.buffer, job.area, str(parts_dir), *([index] if numbered else []),
                             *([] if context.skip_withheld else ["withheld kept"]),
                             *([chunk, points.start, points.stop] if ranges else []))
            reads[str(parts_dir)] = (bounds, len(points) if points is not None else source.point_count)
            planned.append((f"partition/{name}", fp, (reader, str(source.path), crs.to_wkt(), work_crs.to_wkt(),
                                                      grid.size, grid.buffer, str(parts_dir), str(out_dir), job.area,
                                                      chunk, quanta, index, points)))
    layout = plan_tiles(grid, reads, job.area)
    if not layout.tiles:
        raise _no_points(job)
    partition = [Task(key, "tile", partition_task, (*args, layout.spans.get(args[6])), fp) for key, fp, args in planned]
    part_fps = [t.fingerprint for t in partition]

    remove_stale_parts(work / "parts", {Path(t.key).name for t in partition})
    with dask_client(scheduler, workers, work / "dask") as client:
        if is_remote(scheduler):
            paths = [s.path for s in sources] + [p for s in job.stages if s.role in ("tile", "items")
                                                 for p in s.option_files()]
            check_shared_storage(client, paths, out_dir, work / "storage-check")
        upstream = ItemPhase()  # the item stages (panoramas, ...) run first: point stages may use their artefacts
        if any(isinstance(s, ItemStage) for s in job.stages):
            upstream = run_items(job, work_crs, client, manifest, hashes, code, force=force, keep_going=keep_going,
                                 on_outcome=on_outcome, on_plan=on_plan)
            if not upstream.report.ok:
                return JobRun(job, upstream.report, [Product.from_json(p) for p in upstream.products],
                              items=upstream.items)
        extent = Bounds.union(s.bounds for s in sources).xy
        advice = tile_advice(grid, layout.tiles, extent, job.area, sum(client.nthreads().values()))
        if advice:
            log.info(advice)
        largest_first = sorted(partition, key=lambda t: -reads[t.args[6]][1])  # files (ranges) by their points
        folder_of = {t.key: str(work / "parts" / Path(t.key).name) for t in partition}
        tiles, parts, sizes = layout.tiles, layout.parts, layout.estimates
        streamed = any(len(p) < len(partition) for p in parts.values())
        first = RunReport()
        if not streamed:  # every chain would wait for every partition: plan the chains from its counts instead
            if on_plan:
                on_plan(len(partition), "partition")
            first = run_tasks(largest_first, client, manifest, out_dir=out_dir, force=force, keep_going=keep_going,
                              on_outcome=on_outcome)
            if not first.ok:  # never build tiles from a partial set of inputs
                hashes.save()
                return JobRun(job, RunReport({**upstream.report.outcomes, **first.outcomes}))
            sizes = _core_counts(partition, first)
            tiles = [t for t in tiles if sizes.get(t.key)]  # those holding points, ordered by them, no waiting
            parts = parts_of_tiles({folder_of[t.key]: first.outcomes[t.key].result["counts"] for t in partition},
                                   tiles)
            if not tiles:
                raise _no_points(job)
        plan = _Plan(job, context, tiles, (parts, _dimensions(inputs, numbered)), part_fps, manifest, hashes, code,
                     force, upstream, loaded_points(grid, {t.key: sizes.get(t.key, 0) for t in tiles}),
                     {folder: key for key, folder in folder_of.items()}, wait=streamed)
        hashes.save()
        tasks = [*largest_first, *plan.tasks] if streamed else plan.tasks
        if on_plan:
            on_plan(len(tasks), "tiles" if streamed else "stages")
        second = run_tasks(tasks, client, manifest, out_dir=out_dir, force=force, keep_going=keep_going,
                           on_outcome=on_outcome)
        ran = RunReport({**first.outcomes, **second.outcomes}, first.seconds + second.seconds)

    counts = _core_counts(partition, ran)
    tiles = sum(1 for n in counts.values() if n > 0)
    if ran.ok and not tiles:
        raise _no_points(job)
    report = RunReport({**upstream.report.outcomes, **{t.key: ran.outcomes[t.key] for t in partition},
                        **plan.outcomes(ran)}, upstream.report.seconds + ran.seconds)
    products = [Product.from_json(p) for o in report.outcomes.values() if isinstance(o.result, dict)
                for p in o.result.get("products", []) if isinstance(p, dict)]
    all_tiles = grid.tiles_covering(extent)
    return JobRun(job, report, products, tiles, max(0, len(all_tiles) - tiles), sum(counts.values()),
                  [advice] if advice else [], upstream.items)


def _no_points(job: Job) -> InputError:
    """The error of a job whose inputs have no point inside its area."""
    return InputError(job.source, "no points inside the job area (check [job].area and the inputs)")


def _core_counts(partition: list[Task], report: RunReport) -> dict[str, int]:
    """The core points per tile the partition tasks that ran or were kept wrote."""
    counts: dict[str, int] = {}
    for task in partition:
        outcome = report.outcomes[task.key]
        for key, n in (outcome.result or {}).get("counts", {}).items() if outcome.status in ("done", "skipped") else ():
            counts[key] = counts.get(key, 0) + n
    return counts


def _dimensions(inputs: list[tuple[ReaderStage, PointSource]], numbered: bool) -> dict[str, np.dtype]:
    """The dimensions of all the job's parts in input order, as :func:`cim.tiling.part_dtypes` would find them
    after the partition (the chains start before it ends): from the header where the source can tell them
    (``schema_cloud``, e.g. :meth:`cim.io.las.LasSource.schema_cloud`), else from its first point."""
    dtypes: dict[str, np.dtype] = {}
    for i, (_, source) in enumerate(inputs):
        if source.point_count == 0:  # its part folder names no dimension
            continue
        schema = getattr(source, "schema_cloud", None)
        first = schema() if schema is not None else next(iter(source.chunks(1)), None)
        if first is None:
            continue
        if numbered:  # as the partition adds them (see cim.tiling.partition_file)
            first.set(INPUT_INDEX, i)
            first.set(INPUT_POSITION, np.arange(len(first)))
        for name in first.names:
            dtypes.setdefault(name, first[name].dtype)
    return dtypes


_TEMPORARY = re.compile(r"^\..+(\.[0-9a-f]{8}\.tmp(\.[^.]+)?|_[0-9a-f]{8}_tmp)$")


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporaries a killed run left behind (names made by :mod:`cim.fileutil`)."""
    if not out_dir.exists():
        return
    for path in sorted(out_dir.rglob(".*"), reverse=True):
        if _TEMPORARY.match(path.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def remove_stale_parts(parts: Path, planned: set[str]) -> None:
    """Delete the part folders of an earlier plan (other inputs, or a file split into other ranges), so that the
    work folder holds one copy of the inputs."""
    for folder in sorted(parts.iterdir()) if parts.is_dir() else []:
        if folder.is_dir() and folder.name not in planned:
            shutil.rmtree(folder)


def _acquired(sources: list[PointSource]) -> str | None:
    """The earliest creation date the inputs' headers state (ISO 8601), for the catalog's items."""
    dates = [s.acquired for s in sources if s.acquired]
    return f"{min(dates).isoformat()}T00:00:00Z" if dates else None


def _quanta(source: PointSource) -> dict[str, tuple[float, float]] | None:
    """The (scale, offset) of a LAS input's x, y, z: the parts store its coordinates as those integers (None for
    readers without a coordinate grid)."""
    header = getattr(source, "header", None)
    if header is None:
        return None
    return {name: (float(s), float(o)) for name, s, o in zip("xyz", header.scales, header.offsets)}


def _with_rounding(bounds: Bounds, quanta: dict[str, tuple[float, float]] | None) -> Bounds:
    """Header ``bounds`` grown by half the coordinate scale: writers that take the bounds before rounding the
    coordinates to the scale state them up to that much short of the points."""
    if quanta is None:
        return bounds
    gx, gy = quanta["x"][0] / 2, quanta["y"][0] / 2
    return bounds._replace(minx=bounds.minx - gx, miny=bounds.miny - gy, maxx=bounds.maxx + gx, maxy=bounds.maxy + gy)


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


def loaded_points(grid: TileGrid, counts: dict[str, int]) -> dict[str, float]:
    """The points each tile's chain will load (an estimate from the core ``counts``): its own core points plus
    the share of each neighbour's that lies in its buffer (a strip of buffer / size of an edge neighbour, that
    square of a corner one). Edge tiles of a job load fewer points than interior ones with the same core."""
    edge = grid.buffer / grid.size
    loaded: dict[str, float] = {}
    for key, n in counts.items():
        ix, iy = (int(v) for v in key.split("_"))
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                share = edge ** (abs(dx) + abs(dy))
                neighbour = f"{ix + dx}_{iy + dy}"
                loaded[neighbour] = loaded.get(neighbour, 0.0) + n * share
    return {key: loaded[key] for key in counts}


def has_tile_step(stage: Stage) -> bool:
    """Whether the stage does work per tile (stages with only a ``finish`` get no per-tile step)."""
    return type(stage).run is not Stage.run


class _Plan:
    """The chain, finish and catalog tasks of the tiles, and the steps a resume can keep.

    Per tile and stage with a per-tile step, a step with a fingerprint (see the module docstring). A step is
    kept when the manifest has it with the same fingerprint, its outputs are intact and nothing it depends on
    re-runs; the steps that re-run form the tile's chain task (plus the point-modifying steps before them when
    they cannot start from the checkpoint). Chains are submitted largest tile first. A stage whose finish is a tree
    reduction (:class:`~cim.pipeline.reduction.BlockFinish`) gets one task per block of tiles before its finish.
    ``parts``: per tile key the part folders that may hold its points, and the dimensions of all the job's parts;
    ``partition_of``: the partition task that writes each part folder; ``wait``: a chain waits for those of its
    folders (else they have run before the plan).
    """

    def __init__(self, job: Job, context: JobContext, tiles: list[Tile],
                 parts: tuple[dict[str, list[str]], dict[str, np.dtype]],
                 part_fps: list[str], manifest: Manifest, hashes: ContentHashes, code: CodeHashes,
                 force: bool, upstream: ItemPhase | None = None, sizes: dict[str, float] | None = None,
                 partition_of: dict[str, str] | None = None, wait: bool = False) -> None:
        upstream = upstream or ItemPhase()
        self.partition_of = partition_of or {}
        self.wait = wait
        self.tiles = tiles
        self.labels: list[tuple[str, Stage]] = [(s.label, s) for s in job.stages if s.role == "tile"]
        self.recorded: dict[str, Any] = {}  # step key -> recorded result, for the steps kept
        self.steps: dict[str, list[Step]] = {t.key: [] for t in tiles}  # every step, per tile
        self.run_keys: set[str] = set()  # steps that run now
        self.tasks: list[Task] = []
        base = {label: fingerprint(code.code_hash(type(stage).__module__), stage.name,
                                   stage.options.model_dump(mode="json"), hashes.digests(stage.option_files()),
                                   *[upstream.fingerprints[n] for n in stage.uses if n in upstream.fingerprints])
                for label, stage in self.labels}
        step_fps: dict[str, str] = {}
        for tile in tiles:
            self._plan_steps(tile, context, base, fingerprint("tile", part_fps, tile.key), step_fps, manifest, force)
        for tile in tiles:
            self._chosen(tile)
        self.finishes: list[tuple[str, Stage, Task]] = []
        self.blocks: dict[str, list[Task]] = {}  # stage label -> summary and block tasks of a tree-reduced finish
        finish_fps = self._finish_plan(context.out_dir, base, step_fps, manifest, force)
        checkpoints = context.out_dir / WORK / "checkpoints"
        chain_of: dict[str, str] = {}  # step key -> chain task key
        # the largest tiles (``sizes``: points each loads) first: no worker is left with a large tile at the end
        for tile in sorted(tiles, key=lambda t: -(sizes or {}).get(t.key, 0)):
            task = self._chain(tile, parts[0][tile.key], parts[1], str(checkpoints / f"{tile.key}.cols"))
            if task is not None:
                self.tasks.append(task)
                chain_of.update({step.key: task.key for step in task.args[0]})
        self.recorded = {k: v for k, v in self.recorded.items() if k not in self.run_keys}
        for i, (label, stage) in enumerate(self.labels):
            if label in finish_fps:
                self._finish(i, label, stage, context, finish_fps[label], chain_of)
        catalog_fp = fingerprint(code.code_hash(write_catalog.__module__), "catalog", list(step_fps.values()),
                                 list(finish_fps.values()), context.acquired, *upstream.fingerprints.values())
        products = [*upstream.products, *(p for r in self.recorded.values() for p in r.get("products", []))]
        self.tasks.append(Task("catalog", "catalog", catalog_task,
                               (job.name, str(context.out_dir), context.crs.to_wkt(), context.acquired, products,
                                *[Dep(t.key) for t in self.tasks]), catalog_fp))

    def _plan_steps(self, tile: Tile, context: JobContext, base: dict[str, str], points_fp: str,
                    step_fps: dict[str, str], manifest: Manifest, force: bool) -> None:
        """The steps of ``tile`` with their fingerprints; each either kept (``recorded``) or to run."""
        points: tuple[str, str | None] = (points_fp, None)  # (fingerprint, key of the producing step)
        earlier: list[tuple[str, str]] = []  # (stage name, step key) of the tile's earlier steps
        for label, stage in self.labels:
            if not has_tile_step(stage):
                continue
            key = f"{label}/{tile.key}"
            used = [k for name, k in earlier if stage.uses is None or name in stage.uses]
            fp = fingerprint(base[label], points[0], [step_fps[k] for k in used])
            step_fps[key] = fp
            entry = None if force else manifest.finished(key, fp)
            depends = [k for k in [points[1], *used] if k]
            if entry is None or not intact(entry["result"], context.out_dir) or \
                    any(k in self.run_keys for k in depends):
                self.run_keys.add(key)
            else:
                self.recorded[key] = entry["result"]
            ctx = TileContext(context.name, context.out_dir, context.crs, context.grid, stage.folder,
                              context.acquired, context.inputs, context.skip_withheld, context.force, tile=tile)
            self.steps[tile.key].append(Step(key, stage, fp, ctx))
            earlier.append((stage.name, key))
            if stage.modifies_points:
                points = (fp, key)

    def _chosen(self, tile: Tile) -> tuple[list[int], bool, int]:
        """Indices of the tile's steps its chain runs (adding them to ``run_keys``), whether it starts from the
        checkpoint, and the index of the step after which the checkpoint is written (-1: none)."""
        steps = self.steps[tile.key]
        needed = [i for i, s in enumerate(steps) if s.key in self.run_keys]
        modifying = [i for i, s in enumerate(steps) if s.stage.modifies_points]
        last = modifying[-1] if modifying else -1
        save = last >= 0 and last < len(steps) - 1  # a later step reads the points: checkpoint after `last`
        resume = save and bool(needed) and needed[0] > last
        if needed and not resume:  # from the parts: the point-modifying steps before the last needed one run again
            needed = sorted(set(needed) | {i for i in modifying if i < needed[-1]})
        self.run_keys.update(steps[i].key for i in needed)
        return needed, resume, last if save and not resume else -1

    def _chain(self, tile: Tile, parts_dirs: list[str], dtypes: dict[str, np.dtype], checkpoint: str) -> Task | None:
        """The chain task of ``tile`` (None when all its steps are kept), reading ``parts_dirs``."""
        needed, resume, save = self._chosen(tile)
        if not needed:
            return None
        steps = self.steps[tile.key]
        chosen = [steps[i] for i in needed]
        save_after = steps[save].key if save >= 0 else None
        waits = [Dep(self.partition_of[f]) for f in parts_dirs] if self.wait else []
        return Task(f"chain/{tile.key}", "chain", chain_task,
                    (chosen, parts_dirs, checkpoint, resume, save_after, dtypes, *waits),
                    fingerprint([s.fingerprint for s in chosen], resume), queued=True)

    def _waits(self, i: int, stage: Stage, step_keys: list[str]) -> tuple[list[str], list[str]]:
        """The steps whose results the finish of stage ``i`` reads or waits for (its own; for a finish-only stage
        the earlier steps it uses), and the labels of the earlier finishes it uses."""
        label = self.labels[i][0]
        if has_tile_step(stage):
            return [f"{label}/{t.key}" for t in self.tiles], self._used_finishes(i, stage)
        earlier = {lab: s.name for lab, s in self.labels[:i]}
        waits = [k for k in step_keys if k.split("/")[0] in earlier
                 and (stage.uses is None or earlier[k.split("/")[0]] in stage.uses)]
        return waits, self._used_finishes(i, stage)

    def _used_finishes(self, i: int, stage: Stage) -> list[str]:
        return [lab for lab, s in self.labels[:i]
                if s.has_finish() and (stage.uses is None or s.name in stage.uses)]

    def _finish_plan(self, out_dir: Path, base: dict[str, str], step_fps: dict[str, str], manifest: Manifest,
                     force: bool) -> dict[str, str]:
        """The fingerprint of every finish (by stage label). A stage whose scratch was cleared after its last
        finish (see :func:`finish_task`) runs all its tile steps again when its finish must run again."""
        fps: dict[str, str] = {}
        needed: dict[str, bool] = {}
        for i, (label, stage) in enumerate(self.labels):
            if not stage.has_finish():
                continue
            waits, used = self._waits(i, stage, list(step_fps))
            fps[label] = fingerprint(base[label], [step_fps[k] for k in waits], [fps[u] for u in used])
            entry = None if force else manifest.finished(f"{label}/finish", fps[label])
            needed[label] = (entry is None or not intact(entry["result"], out_dir) or
                             any(k in self.run_keys for k in waits) or any(needed[u] for u in used))
            if needed[label] and has_tile_step(stage) and _cleared_mark(out_dir, stage).exists():
                self.run_keys.update(waits)
                for tile in self.tiles:
                    self._chosen(tile)
        return fps

    def _finish(self, i: int, label: str, stage: Stage, context: JobContext, fp: str,
                chain_of: dict[str, str]) -> None:
        """The finish task of stage ``i`` (see :meth:`_waits`)."""
        waits, used = self._waits(i, stage, [s.key for steps in self.steps.values() for s in steps])
        own = waits if has_tile_step(stage) else []
        chains = list(dict.fromkeys(chain_of[k] for k in waits if k in chain_of))
        stage_ctx = JobContext(context.name, context.out_dir, context.crs, context.grid, stage.folder,
                               context.acquired, context.inputs, context.skip_withheld, context.force)
        recorded = {k: self.recorded[k] for k in own if k in self.recorded}
        scratch = str(stage.scratch_dir(context.out_dir)) if has_tile_step(stage) else None
        deps = [Dep(k) for k in chains + [f"{u}/finish" for u in used]]
        self.blocks[label] = self._blocks(label, stage, stage_ctx, fp, recorded, deps, chain_of)
        self.tasks += self.blocks[label]
        deps += [Dep(t.key) for t in self.blocks[label] if t.fn is block_task]
        task = Task(f"{label}/finish", stage.name, finish_task, (stage, stage_ctx, own, recorded, scratch, *deps), fp)
        self.tasks.append(task)
        self.finishes.append((label, stage, task))

    def _blocks(self, label: str, stage: Stage, ctx: JobContext, fp: str, recorded: dict[str, Any],
                deps: list[Dep], chain_of: dict[str, str]) -> list[Task]:
        """The summary and block tasks of a tree-reduced finish (none for other stages or a single block): the
        summary waits for every tile, a block for its own tiles and the summary."""
        blocks = stage.finish_blocks([t.key for t in self.tiles]) if isinstance(stage, BlockFinish) else {}
        if not blocks:
            return []
        own = [f"{label}/{t.key}" for t in self.tiles]
        summary = Task(f"{label}/summary", stage.name, summary_task, (stage, ctx, own, recorded, *deps),
                       fingerprint(fp, "summary"))
        tasks = [summary]
        for name, tiles in sorted(blocks.items()):
            keys = [f"{label}/{t}" for t in tiles]
            chains = list(dict.fromkeys(chain_of[k] for k in keys if k in chain_of))
            tasks.append(Task(f"{label}/block/{name}", stage.name, block_task,
                              (stage, ctx, name, keys, {k: recorded[k] for k in keys if k in recorded},
                               Dep(summary.key), *[Dep(c) for c in chains]), fingerprint(fp, name, tiles)))
        return tasks

    def outcomes(self, report: RunReport) -> dict[str, TaskOutcome]:
        """The run's outcomes per step (kept, done, failed or cancelled), finish and catalog, in plan order, plus
        the points' loading and checkpoint per chain (stage "tile.io": the chain's start up to its first step, and
        ``<chain>/checkpoint`` between the step it follows and the next, so that the timeline has no gap where the
        worker writes it). Dependencies: a chain's loading waits for the partitions of its tile's part folders, a
        step for the one before it (or the checkpoint); a finish or the catalog for the last step of each chain.
        The steps of tiles without points (see :func:`_empty_records`) are left out, as these tiles are."""
        per_step: dict[str, TaskOutcome] = {}
        empty = {r["tile"] for r in self.recorded.values() if r.get("empty")}
        io: dict[str, TaskOutcome] = {}
        last_step: dict[str, str] = {}  # chain task key -> its last step's key
        for task in self.tasks:
            outcome = report.outcomes.get(task.key)
            if outcome is None or task.fn is not chain_task:
                continue
            steps: list[Step] = task.args[0]
            tile = steps[0].ctx.tile.key
            if outcome.status == "done" and outcome.result["records"][0]["result"].get("empty"):
                empty.add(tile)
                continue
            if outcome.status == "done":
                records = outcome.result["records"]
                saved = outcome.result.get("checkpoint")
                previous = task.key
                for record in records:
                    result = record["result"]
                    per_step[record["key"]] = TaskOutcome(record["key"], "", "done", record["seconds"], result,
                                                          warnings=result["warnings"], started=result["span"][0],
                                                          worker=outcome.worker, deps=[previous],
                                                          cpu=result["cpu"])
                    previous = last_step[task.key] = record["key"]
                    if saved and record["key"] == saved["after"]:  # the checkpoint, between this step and the next
                        previous = f"{task.key}/checkpoint"
                        (begin, end), cpu = saved["span"], saved["cpu"]
                        io[previous] = TaskOutcome(previous, "tile.io", "done", end - begin, {"tile": tile},
                                                   started=begin, ended=end, worker=outcome.worker,
                                                   deps=[record["key"]], cpu=cpu)
                steps_cpu = sum(r["result"]["cpu"] for r in records) + (saved["cpu"] if saved else 0.0)
                loading = outcome.result["io_seconds"] - (saved["span"][1] - saved["span"][0] if saved else 0.0)
                io[task.key] = TaskOutcome(task.key, "tile.io", "done", loading, {"tile": tile},
                                           warnings=outcome.warnings, started=outcome.started, worker=outcome.worker,
                                           deps=[self.partition_of[f] for f in task.args[1]
                                                 if f in self.partition_of],
                                           ended=records[0]["result"]["span"][0],
                                           cpu=max(0.0, outcome.cpu - steps_cpu))
                continue
            failed_at = next((j for j, s in enumerate(steps) if s.key == outcome.part),
                             0 if outcome.status == "failed" else None)  # a failure outside a step: the first
            for j, step in enumerate(steps):
                if failed_at is not None and j == failed_at:
                    per_step[step.key] = TaskOutcome(step.key, step.stage.name, "failed", error=outcome.error)
                else:
                    reason = "an upstream task failed" if failed_at is not None else outcome.error
                    blocked = [d for d in task.deps if getattr(report.outcomes.get(d), "status", "") == "failed"]
                    if failed_at is None and blocked:  # a partition of the tile's inputs failed: not run on part
                        reason = f"not run: {', '.join(blocked)} failed"
                    per_step[step.key] = TaskOutcome(step.key, step.stage.name, "cancelled", error=reason)
        ordered: dict[str, TaskOutcome] = {}
        finishes = {label: task for label, _, task in self.finishes}
        for label, stage in self.labels:
            for tile in self.tiles if has_tile_step(stage) else []:
                if tile.key in empty:
                    continue
                key = f"{label}/{tile.key}"
                outcome = per_step.get(key) or TaskOutcome(key, stage.name, "skipped", result=self.recorded.get(key))
                outcome.stage = stage.name
                ordered[key] = outcome
            for task in self.blocks.get(label, []):
                ordered[task.key] = report.outcomes[task.key]
            if label in finishes:
                ordered[finishes[label].key] = report.outcomes[finishes[label].key]
        ordered["catalog"] = report.outcomes["catalog"]
        blocks = [report.outcomes[task.key] for tasks in self.blocks.values() for task in tasks]
        for outcome in [*blocks, *(report.outcomes[task.key] for _, _, task in self.finishes), ordered["catalog"]]:
            outcome.deps = [last_step.get(d, d) for d in outcome.deps]
        return {**ordered, **io}


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
        "items": run.items,
        "seconds": round(report.seconds, 3),
        "stages": report.stage_table(),
        "timeline": report.timeline(),
        "products": sorted(p.path for p in run.products),
        "warnings": report.warnings,
        "advice": run.advice,
        "failures": [{"task": o.key, "error": o.error} for o in report.by_status("failed")],
    }


def outcome_line(outcome: TaskOutcome) -> str:
    """One log line for a finished task."""
    return f"{outcome.status:9s} {outcome.key} ({outcome.seconds:.2f} s){' ' + outcome.error if outcome.error else ''}"
