"""The stage catalogue: how a stage is declared, what it receives per tile, and what it returns.

A stage is a small class with a ``name`` ("classify.ground"), pydantic ``Options`` (unknown keys are errors),
a per-tile ``run(cloud, ctx)`` and optionally a global ``finish(results, ctx)`` that runs once after all tiles
(mosaics, hierarchy roots, merged files).

Stages are found through Python entry points (group ``cim.stages``, ``name = "module:Class"``): cim lists its own
in ``pyproject.toml`` and any installed package can add more the same way. A job imports only the modules of the
stages it names, and those are light: a stage imports its implementation (scipy, rasterio, shapely, ...) in the
methods that run it and names those modules in ``worker_imports``, which the worker processes import once
(:func:`worker_modules`), so the driver validating a job does not pay for them.

Stages hand data to each other as named *artefacts* besides the tile's points: a stage lists the artefacts it
``produces`` (found in its ``folder``) and ``consumes``; the job wires each consumer to its producer when it is
validated (:mod:`cim.pipeline.job`) and stores where the artefact lives in the consumer's ``inputs``.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyproj
from pydantic import BaseModel, ConfigDict

from cim.errors import CimError
from cim.fileutil import expand_patterns
from cim.points import PointCloud
from cim.tiling import Tile, TileGrid

log = logging.getLogger("cim.pipeline")

#: The entry-point group stages are registered in.
ENTRY_POINT_GROUP = "cim.stages"
NO_STAGES = (f"no stages are registered (entry-point group {ENTRY_POINT_GROUP} is empty): cim's package metadata is "
             "missing or stale; reinstall cim (pip install -e .)")


class StageOptions(BaseModel):
    """Base class of every stage's options: unknown keys are an error; values are validated by type.

    ``path_fields`` names options holding file paths or glob patterns: relative values resolve against the job
    file's folder, and input patterns that match nothing are reported before the run (``output_fields`` lists
    the path options that are outputs and need not exist).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    path_fields: ClassVar[tuple[str, ...]] = ()
    output_fields: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Product:
    """One file a stage wrote, relative to the job's output folder, with what the catalog needs to know."""

    path: str
    kind: str  # 'pointcloud', 'raster', '3dtiles', 'cityjson', 'vector', 'image', ...
    media_type: str
    roles: tuple[str, ...] = ("data",)
    properties: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "media_type": self.media_type,
            "roles": list(self.roles),
            "properties": self.properties,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Product:
        return cls(data["path"], data["kind"], data["media_type"], tuple(data["roles"]), data["properties"])


@dataclass
class JobContext:
    """What every task of a job knows: its name, output folder, CRS and tile grid."""

    name: str
    out_dir: Path
    crs: pyproj.CRS
    grid: TileGrid
    stage_folder: str = ""
    #: ISO date of the data (from the job or the inputs' headers): products carry it instead of "today".
    acquired: str | None = None
    #: The job's input files in order (``cim.points.INPUT_INDEX`` numbers them).
    inputs: tuple[str, ...] = ()
    #: Whether withheld points are hidden from the stages (all but those with ``sees_withheld``).
    skip_withheld: bool = True
    #: Whether the job redoes every task (``--force``): what stages keep between runs (caches) is not reused.
    force: bool = False

    @property
    def product_dir(self) -> Path:
        """The stage's own folder inside the output folder (created on demand)."""
        path = self.out_dir / self.stage_folder if self.stage_folder else self.out_dir
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def acquired_date(self) -> datetime.date:
        """The data's date as a ``date`` (1970-01-01 when unknown), for headers that need one."""
        return datetime.date.fromisoformat(self.acquired[:10]) if self.acquired else datetime.date(1970, 1, 1)

    def relative(self, path: Path) -> str:
        """``path`` relative to the output folder, POSIX style (how products are recorded)."""
        return Path(path).resolve().relative_to(self.out_dir.resolve()).as_posix()


@dataclass
class TileContext(JobContext):
    """A job context for one tile, collecting the warnings a stage raises for it."""

    tile: Tile = None  # type: ignore[assignment]
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a warning for the run report (and show it in the log)."""
        self.warnings.append(f"{self.tile.key}: {message}" if self.tile else message)


@dataclass
class TileResult:
    """What a stage returns for one tile: the (possibly new) cloud, files written, small JSON-able stats."""

    cloud: PointCloud | None = None
    products: list[Product] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    #: other files it wrote (relative to the output folder, e.g. a tileset's per-tile glbs): checked by a resume,
    #: which re-runs the step when one is missing or changed, but not listed in the catalog
    outputs: list[str] = field(default_factory=list)


class Stage:
    """Base class of all stages. Subclasses set ``name``, ``Options`` and implement :meth:`run`."""

    name: ClassVar[str]
    Options: ClassVar[type[StageOptions]] = StageOptions
    #: True when run() returns a changed cloud that later stages must see.
    modifies_points: ClassVar[bool] = False
    #: One-line description for ``cim stages``.
    summary: ClassVar[str] = ""
    #: 'reader' (names the inputs), 'tiler' (sets the grid), 'tile' (runs per tile; the default) or 'items' (one
    #: task per item of its own, e.g. a panorama: :mod:`cim.pipeline.items`).
    role: ClassVar[str] = "tile"
    #: Artefacts the stage writes into its ``folder`` for later stages (e.g. "dtm", "buildings").
    produces: ClassVar[tuple[str, ...]] = ()
    #: Artefacts the stage needs: the job is invalid unless an earlier stage produces each of them.
    consumes: ClassVar[tuple[str, ...]] = ()
    #: Artefacts the stage reads when an earlier stage produces them, and does without otherwise.
    reuses: ClassVar[tuple[str, ...]] = ()
    #: True when run() also gets the points flagged withheld (which the job hides from the other stages).
    sees_withheld: ClassVar[bool] = False
    #: Modules a worker process needs to run this stage: those its methods import when they run (the stage module
    #: itself stays light to import, for its options). The fork server of the local workers imports them once
    #: (:func:`worker_modules`).
    worker_imports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: StageOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()
        #: Folder (relative to the output folder) of each consumed or reused artefact, wired by the job.
        self.inputs: dict[str, str] = {}
        #: Names of the earlier stages producing those artefacts: the stage waits for them and re-runs with them.
        self.uses: tuple[str, ...] = ()
        #: The stage's own name in its job, ``NN-name`` (set by the job: NN counts the tile stages, or is an item
        #: stage's place in the job): its task keys and scratch folder, distinct for two stages of one name.
        self.label: str = self.name

    @property
    def needs_input_index(self) -> bool:
        """Whether the points must carry :data:`cim.points.INPUT_INDEX` and ``INPUT_POSITION`` (their input file
        and place in it)."""
        return False

    def scratch_dir(self, out_dir: Path) -> Path:
        """The folder where the stage's tile steps leave data for its finish (``<out>/.cim/work/<label>``, one per
        stage of the job); the job clears it after the finish."""
        return out_dir / ".cim" / "work" / self.label

    def option_files(self) -> list[Path]:
        """The existing files the options name (``path_fields`` minus ``output_fields``; folders walked): what the
        stage reads besides the points, hashed into its fingerprints."""
        files: list[Path] = []
        for name in (n for n in self.options.path_fields if n not in self.options.output_fields):
            value = getattr(self.options, name, None)
            patterns = list(value) if isinstance(value, list | tuple) else [value] if value else []
            for path in expand_patterns(patterns):
                files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return [p for p in files if p.is_file()]

    def input_dir(self, artefact: str, ctx: JobContext) -> Path | None:
        """Folder of an artefact an earlier stage produced (None when no stage of the job produces it)."""
        folder = self.inputs.get(artefact)
        return None if folder is None else ctx.out_dir / folder

    @property
    def folder(self) -> str:
        """Folder of the stage's products inside the output folder: its ``folder`` option, else the folder
        itself ("")."""
        return getattr(self.options, "folder", "")

    def check(self) -> list[tuple[str, str]]:
        """Validation-time check of the stage's configuration once the job has wired its artefacts (``inputs``),
        before any file is opened: ``(option, problem)`` pairs, each reported as one line naming that key."""
        return []

    def plan(self, ctx: JobContext) -> None:
        """Planning-time check of the stage with the job's CRS and tile grid, before any work: raise a
        :class:`CimError` to refuse the job, warn (``CimWarning``) about what the run will do differently."""

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        """Process one tile (core points plus buffer context) and return the result."""
        raise NotImplementedError

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        """Global step after all tiles; ``results`` holds each tile's ``stats`` (plus 'tile' and 'products')."""
        return []

    def has_finish(self) -> bool:
        """Whether the stage (with these options) has a global step."""
        return type(self).finish is not Stage.finish


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The registered stages by name (the first registration wins; a conflicting second one is logged)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        first = found.setdefault(entry.name, entry)
        if first.value != entry.value:
            log.warning("stage %r is registered twice (%s, %s): using the first", entry.name, first.value,
                        entry.value)
    return found


def stage_names() -> list[str]:
    """Names of all registered stages, sorted (imports nothing)."""
    return sorted(_entry_points())


def stage_module(name: str) -> str | None:
    """The module that holds the stage called ``name`` (imports nothing); None when no stage has that name."""
    entry = _entry_points().get(name)
    return entry.module if entry is not None else None


def lookup(name: str) -> type[Stage] | None:
    """The stage called ``name``, importing only its module; None when no stage has that name.

    Raises :class:`CimError` when the registered class cannot be imported or is not a stage of that name.
    """
    if not _entry_points():
        raise CimError(NO_STAGES)
    entry = _entry_points().get(name)
    if entry is None:
        return None
    try:
        cls = entry.load()
    except (ImportError, AttributeError) as exc:
        raise CimError(f"stage {name!r} ({entry.value}) cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage) and cls.name == name):
        raise CimError(f"stage {name!r} ({entry.value}) is not a Stage subclass whose name is {name!r}")
    return cls


def registry() -> dict[str, type[Stage]]:
    """All registered stages by name (imports every stage module)."""
    return {name: cls for name in stage_names() if (cls := lookup(name)) is not None}


def worker_modules(names: Iterable[str]) -> list[str]:
    """The modules worker processes need for the stages called ``names``: their stage modules and the stages'
    ``worker_imports``, sorted (imports the stage modules only). Names of no stage, or of one that cannot be loaded,
    are left out: validating the job reports them."""
    found: set[str] = set()
    for name in names:
        try:
            cls = lookup(name)
        except CimError:
            continue
        if cls is not None:
            found.update((cls.__module__, *cls.worker_imports))
    return sorted(found)
