"""Jobs of item stages: stages whose work is a list of independent items (panoramas, say) instead of point tiles.

An item stage (:class:`ItemStage`, ``role = "items"``) lists its items when the job is planned, each with what its
result depends on (content hashes of the files it reads, its row of a table); the runner makes one task per item
(``NN-stage/<item>``, fingerprint = the stage's code, options and the item's dependencies), then the stage's
``finish`` over the items that are done (``NN-stage/finish``) and the job's STAC catalog. The tasks go through
:func:`cim.runner.run_tasks` like every other job's: the manifest, resume (a changed item re-runs alone), report.
Items are independent: one that fails does not stop the others, and the finish indexes the ones that are done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pyproj

from cim import crs as crs_mod
from cim.catalog import write_catalog
from cim.errors import ConfigError
from cim.pipeline.stage import JobContext, Product, Stage
from cim.runner import (Manifest, RunReport, Task, check_shared_storage, dask_client, fingerprint, is_remote,
                        run_tasks)
from cim.runner.fingerprints import CODE_IMPORTS, CodeHashes, ContentHashes, stamp
from cim.tiling import TileGrid

if TYPE_CHECKING:
    from cim.pipeline.execute import JobRun
    from cim.pipeline.job import Job
    from cim.runner.cluster import AnyClient


@dataclass(frozen=True)
class Item:
    """One unit of an item stage's work: its ``name`` (unique in the stage), what :meth:`ItemStage.run_item` needs
    (``payload``, picklable) and what its result depends on besides the stage's code and options (``depends``,
    JSON-able: content hashes, its table row)."""

    name: str
    payload: Any
    depends: Any


class ItemStage(Stage):
    """A stage made of independent items; see the module docstring."""

    role: ClassVar[str] = "items"
    #: What one item is, plural, for the run's summary ("12 images").
    item_noun: ClassVar[str] = "items"

    def plan_items(self, ctx: JobContext, hashes: ContentHashes) -> list[Item]:
        """The items, checked before any work (an error here refuses the job); ``hashes`` gives content hashes."""
        raise NotImplementedError

    def code_parts(self, hashes: ContentHashes) -> list[Any]:
        """What the results depend on besides the cim modules the stage imports (shipped models, libraries)."""
        return []

    def run_item(self, item: Item, ctx: JobContext) -> dict[str, Any]:
        """Do one item's work; returns JSON-able ``stats`` and ``outputs`` (files written, relative to the output
        folder) and optionally ``products`` (:meth:`Product.to_json`)."""
        raise NotImplementedError


def item_task(stage: ItemStage, item: Item, ctx: JobContext) -> dict[str, Any]:
    """Worker side: one item, its outputs stamped so a resume finds changed products."""
    result = stage.run_item(item, ctx)
    return {**result, "item": item.name, "stamps": stamp(result.get("outputs", []), ctx.out_dir)}


def items_finish_task(stage: ItemStage, ctx: JobContext, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Worker side: the stage's finish over the results of its items that are done."""
    products = stage.finish(results, ctx)
    outputs = [p.path for p in products]
    return {"products": [p.to_json() for p in products], "outputs": outputs, "stamps": stamp(outputs, ctx.out_dir)}


@dataclass
class ItemPhase:
    """What the item stages of a job did: the report of their tasks, each stage's finish fingerprint (by stage
    name: a later stage using its artefact covers it), the products of the finishes and the number of items
    planned by :attr:`ItemStage.item_noun`."""

    report: RunReport = field(default_factory=RunReport)
    fingerprints: dict[str, str] = field(default_factory=dict)
    products: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, int] = field(default_factory=dict)


def run_items(job: Job, crs: pyproj.CRS, client: AnyClient, manifest: Manifest, hashes: ContentHashes, code: CodeHashes,
              *, force: bool, keep_going: bool, on_outcome: Any = None, on_plan: Any = None) -> ItemPhase:
    """Plan and run the item stages of ``job`` (their items, then their finishes) in the job's ``crs``."""
    out_dir = job.out_dir
    grid = TileGrid(1.0, 0.0)  # item stages have no tiles
    planned: list[tuple[str, ItemStage, JobContext, str, list[Task]]] = []
    for stage in (s for s in job.stages if isinstance(s, ItemStage)):
        label = stage.label
        ctx = JobContext(job.name, out_dir, crs, grid, stage.folder, job.datetime)
        base = fingerprint(code.code_hash(type(stage).__module__), stage.name, stage.options.model_dump(mode="json"),
                           stage.code_parts(hashes))
        tasks = [Task(f"{label}/{item.name}", stage.name, item_task, (stage, item, ctx),
                      fingerprint(base, item.depends)) for item in stage.plan_items(ctx, hashes)]
        planned.append((label, stage, ctx, base, tasks))
    hashes.save()
    items = [t for *_, tasks in planned for t in tasks]
    if on_plan:
        on_plan(len(items), "items")
    first = run_tasks(items, client, manifest, out_dir=out_dir, force=force, keep_going=True,  # independent
                      on_outcome=on_outcome)
    finishes: list[Task] = []
    phase = ItemPhase()
    for label, stage, ctx, base, tasks in planned:
        phase.items[stage.item_noun] = phase.items.get(stage.item_noun, 0) + len(tasks)
        done = [t for t in tasks if first.outcomes[t.key].status in ("done", "skipped")]
        phase.fingerprints[stage.name] = fingerprint(base, [t.fingerprint for t in done])
        if done and stage.has_finish():  # what is done is indexed; the failed items are in the report
            finishes.append(Task(f"{label}/finish", stage.name, items_finish_task,
                                 (stage, ctx, [first.outcomes[t.key].result for t in done]),
                                 phase.fingerprints[stage.name]))
    if on_plan:
        on_plan(len(finishes), "finish")
    second = run_tasks(finishes, client, manifest, out_dir=out_dir, force=force, keep_going=keep_going,
                       on_outcome=on_outcome)
    phase.report = RunReport({**first.outcomes, **second.outcomes}, first.seconds + second.seconds)
    phase.products = [p for o in second.outcomes.values() if isinstance(o.result, dict)
                      for p in o.result.get("products", [])]
    return phase


def run_item_job(job: Job, *, scheduler: str | None = None, workers: int | None = None, force: bool = False,
                 keep_going: bool = False, on_outcome: Any = None, on_plan: Any = None) -> JobRun:
    """Run a job made of item stages only (no point readers): items, finishes, the STAC catalog."""
    from cim.pipeline.execute import WORK, JobRun, catalog_task, remove_stale_temporaries

    if not job.crs and not job.output_crs:
        raise ConfigError("job.crs", "a job without point readers needs the CRS of its products", job.source)
    crs = crs_mod.resolve(job.output_crs or job.crs)
    out_dir = job.out_dir
    remove_stale_temporaries(out_dir)
    work = out_dir / WORK
    manifest = Manifest(work / "manifest.jsonl")
    code = CodeHashes(work / CODE_IMPORTS)
    with dask_client(scheduler, workers, work / "dask") as client:
        if is_remote(scheduler):  # every worker reads the stages' files and writes the output folder
            reads = [p for stage in job.stages for p in stage.option_files()]
            check_shared_storage(client, reads, out_dir, work / "storage-check")
        phase = run_items(job, crs, client, manifest, ContentHashes(work / "hashes.json"), code, force=force,
                          keep_going=keep_going, on_outcome=on_outcome, on_plan=on_plan)
        catalog = Task("catalog", "catalog", catalog_task,
                       (job.name, str(out_dir), crs.to_wkt(), job.datetime, phase.products),
                       fingerprint(code.code_hash(write_catalog.__module__), "catalog", phase.fingerprints,
                                   job.datetime))
        last = run_tasks([catalog] if phase.products else [], client, manifest, out_dir=out_dir, force=force,
                         on_outcome=on_outcome)
    report = RunReport({**phase.report.outcomes, **last.outcomes}, phase.report.seconds + last.seconds)
    return JobRun(job, report, [Product.from_json(p) for p in phase.products], items=phase.items)
