"""The stage catalogue: how a stage is declared, what it receives per tile, and what it returns.

A stage is a small class with a ``name`` ("classify.ground"), pydantic ``Options`` (unknown keys are errors),
a per-tile ``run(cloud, ctx)`` and optionally a global ``finish(results, ctx)`` that runs once after all tiles
(mosaics, hierarchy roots, merged files). Stage modules live in :mod:`cim.stages` and register themselves.
"""

from __future__ import annotations

import datetime
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyproj
from pydantic import BaseModel, ConfigDict

from cim.points import PointCloud
from cim.tiling import Tile, TileGrid


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


class Stage:
    """Base class of all stages. Subclasses set ``name``, ``Options`` and implement :meth:`run`."""

    name: ClassVar[str]
    Options: ClassVar[type[StageOptions]] = StageOptions
    #: True when run() returns a changed cloud that later stages must see.
    modifies_points: ClassVar[bool] = False
    #: One-line description for ``cim stages``.
    summary: ClassVar[str] = ""
    #: 'reader' (names the inputs), 'tiler' (sets the grid) or 'tile' (runs per tile; the default).
    role: ClassVar[str] = "tile"
    #: Names of earlier stages whose products this stage reads (it waits for them, and re-runs when they change).
    #: ``None``: every earlier stage (the safe default). ``()``: only the points.
    uses: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, options: StageOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @property
    def folder(self) -> str:
        """Folder of the stage's products inside the output folder: its ``folder`` option, else the folder
        itself ("")."""
        return getattr(self.options, "folder", "")

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        """Process one tile (core points plus buffer context) and return the result."""
        raise NotImplementedError

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        """Global step after all tiles; ``results`` holds each tile's ``stats`` (plus 'tile' and 'products')."""
        return []

    def has_finish(self) -> bool:
        """Whether the stage (with these options) has a global step."""
        return type(self).finish is not Stage.finish


_REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator adding a stage to the catalogue under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        warnings.warn(f"stage {cls.name!r} registered twice", stacklevel=2)
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Stage]]:
    """All registered stages by name (imports every module of :mod:`cim.stages` first)."""
    from cim.stages import load_all

    load_all()
    return dict(sorted(_REGISTRY.items()))


def lookup(name: str) -> type[Stage] | None:
    """The stage called ``name``, importing only its module; None when no stage has that name."""
    from cim.stages import load

    if name not in _REGISTRY and not load(name):
        return registry().get(name)  # a stage the index does not list (e.g. registered by a plug-in module)
    return _REGISTRY.get(name)
