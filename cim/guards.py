"""Checks made while a job is planned, before any work starts: each refuses with one line naming the file or key.

* point-cloud headers are checked whenever a file is opened (:mod:`cim.io.las_header`); the coordinates inside the
  CRS's area of use (:func:`area_of_use_problem`, decided on by :func:`cim.crs_plan.check_job`);
* the size of the job: tiles it will create (``max_tiles``), raster cells per tile (``max_tile_cells``) and the
  disk space it needs against the free space of the output folder's file system;
* stage folders: relative paths that stay inside the output folder;
* footprint files: readable, the layer present, not empty, overlapping the points (naming a likely CRS mix-up).
"""

from __future__ import annotations

import math
import posixpath
import shutil
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

import pyproj

from cim.errors import ConfigError, InputError, LimitError
from cim.points import Bounds

if TYPE_CHECKING:
    from cim.io.las import LasSource
    from cim.pipeline.execute import JobRun
    from cim.pipeline.job import Job
    from cim.pipeline.stage import StageOptions
    from cim.tiling import TileGrid

#: Defaults of ``[job].max_tiles`` / ``--max-tiles`` and ``[job].max_tile_cells`` / ``--max-tile-cells``: a whole
#: city at 250 m tiles and 0.5 m rasters passes with a wide margin.
MAX_TILES = 100_000
MAX_TILE_CELLS = 1e8
#: Disk bytes a job needs per input point: partition parts (f8 x, y, z + attributes, buffers) and products.
BYTES_PER_POINT = 120


def area_of_use_problem(source: LasSource) -> str | None:
    """A sentence when the file's centre lies outside its CRS's area of use, with the likely cause (a wrong or
    mislabelled CRS); whether a job may go on is :func:`cim.crs_plan.check_job`'s decision."""
    from cim import crs_plan

    if source.crs is None or source.point_count == 0:
        return None
    return crs_plan.misplacement(source.crs, source.bounds)


# ------------------------------------------------------------------------------------------------- size of the job


def tile_count(bounds: tuple[float, float, float, float], size: float) -> int:
    """Tiles of ``size`` whose core meets ``bounds`` (what :meth:`TileGrid.tiles_covering` would list)."""
    minx, miny, maxx, maxy = bounds
    columns = math.floor(maxx / size) - math.floor(minx / size) + 1
    return columns * (math.floor(maxy / size) - math.floor(miny / size) + 1)


def check_size(job: Job, sources: list[LasSource], grid: TileGrid) -> None:
    """Refuse a job that would create more tiles than ``job.max_tiles``, rasters with more cells per tile than
    ``job.max_tile_cells``, or need more disk than is free."""
    if job.area and not (all(math.isfinite(v) for v in job.area) and job.area[0] < job.area[2]
                         and job.area[1] < job.area[3]):
        raise ConfigError("job.area", f"{list(job.area)} is not [minx, miny, maxx, maxy] with finite numbers and "
                                      "min < max", job.source)
    extent = job.area or _points_extent(sources)
    if extent is None:
        return
    minx, miny, maxx, maxy = extent
    tiles = tile_count(extent, grid.size)
    if tiles > job.max_tiles:
        raise LimitError(f"{job.source}: {_tiler_key(job)}: the inputs' extent {maxx - minx:.6g} x "
                         f"{maxy - miny:.6g} makes {tiles:,} tiles of {grid.size:g}, above the limit of "
                         f"{job.max_tiles:,} (raise --max-tiles / [job].max_tiles if you mean it)")
    side = grid.size + 2 * grid.buffer
    for i, stage in enumerate(job.stages):
        resolution = getattr(stage.options, "resolution", None)
        if isinstance(resolution, int | float) and resolution > 0:
            cells = (side / resolution) ** 2
            if cells > job.max_tile_cells:
                raise LimitError(f"{job.source}: stages[{i}].resolution: {resolution:g} makes {cells:,.0f} raster "
                                 f"cells per tile of {side:g} (buffer included), above the limit of "
                                 f"{job.max_tile_cells:,.0f} (raise --max-tile-cells / [job].max_tile_cells, "
                                 "or use smaller tiles)")
    _check_disk(job.out_dir, sum(s.point_count for s in sources))


def _points_extent(sources: list[LasSource]) -> tuple[float, float, float, float] | None:
    """(minx, miny, maxx, maxy) of the inputs' header bounds (files without points aside), None when all are empty."""
    boxes = [s.bounds for s in sources if s.point_count]
    return Bounds.union(boxes).xy if boxes else None


def _tiler_key(job: Job) -> str:
    index = next((i for i, s in enumerate(job.stages) if s.role == "tiler"), None)
    return f"stages[{index}].size" if index is not None else "tile size (default)"


def _check_disk(out_dir: Path, points: int) -> None:
    """Compare the bytes a fresh job needs with the free space (skipped on resume: most of it is written)."""
    if (out_dir / ".cim" / "manifest.jsonl").exists():
        return
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is None:
        return
    free = shutil.disk_usage(existing).free
    needed = points * BYTES_PER_POINT
    if needed > free:
        raise LimitError(f"{out_dir}: disk full ahead: the job needs about {needed:,} bytes "
                         f"({points:,} points) but {free:,} bytes are free there; free space or choose another --out")


# ----------------------------------------------------------------------------------------------- output folders


def folder_problem(value: str) -> str | None:
    """Why ``value``, read as written (links not followed), is not a folder inside the output folder, or ``None``."""
    folder = PurePosixPath(posixpath.normpath(value.replace("\\", "/")))
    if folder.is_absolute() or PurePath(value).is_absolute():
        return f"{value!r} is absolute: give a folder inside the output folder (a relative path)"
    if folder.parts[:1] == ("..",):
        return f"{value!r} is not a folder inside the output folder: '..' leads outside the output folder"
    return None


def option_problems(options: StageOptions, key: str) -> list[ConfigError]:
    """Numbers that are not finite (TOML allows ``inf`` and ``nan``), and folder options (those whose description
    says "folder") that would leave the output folder; the stage's own ``folder`` is checked by the job, with the
    other stages' folders."""
    problems = []
    for name, field in type(options).model_fields.items():
        value = getattr(options, name, None)
        numbers = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            problems.append(ConfigError(f"{key}.{name}", f"{value!r} is not a finite number"))
        if name == "folder" or name in options.path_fields or not isinstance(value, str):
            continue
        if "folder" in (field.description or "") and (problem := folder_problem(value)):
            problems.append(ConfigError(f"{key}.{name}", problem))
    return problems


def check_folders(job: Job) -> None:
    """Every stage's folder, links resolved, inside the output folder (a link in it must not lead elsewhere)."""
    root = job.out_dir.resolve()
    for i, stage in enumerate(job.stages):
        folder = stage.folder
        if folder and not (root / folder).resolve().is_relative_to(root):
            raise ConfigError(f"stages[{i}].folder", f"{root / folder} leads to {(root / folder).resolve()}, outside "
                                                     "the output folder (a link?)", job.source)


# --------------------------------------------------------------------------------------------------- footprints


def check_footprints(job: Job, crs: pyproj.CRS, sources: list[LasSource]) -> None:
    """Every stage's footprint file: readable, its layer present, features in it, meeting the points' bounds."""
    points = _points_extent(sources)
    if points is None:
        return
    for stage in job.stages:
        path = getattr(stage.options, "footprints", None)
        if path:
            from cim.buildings.footprints import check_footprint_file  # shapely: only for jobs with footprints

            check_footprint_file(path, crs, points, layer=getattr(stage.options, "footprints_layer", None),
                                 source_crs=getattr(stage.options, "footprints_crs", None))


def check_plan(job: Job, sources: list[LasSource], crs: pyproj.CRS, grid: TileGrid) -> None:
    """All planning-time guards of ``cim run`` (see the module docstring), in order of cost."""
    check_folders(job)
    check_size(job, sources, grid)
    check_footprints(job, crs, sources)


# ------------------------------------------------------------------------------------------------ after the run


def check_products(run: JobRun) -> None:
    """After a run without failures: every stage with an output folder wrote some data (reports aside).

    A stage that wrote nothing at all (no building met its footprints, no tile had points for it) is an error
    naming it, not an empty product with exit code 0.
    """
    written: dict[str, int] = {}
    for key, outcome in run.report.outcomes.items():
        products = outcome.result.get("products", []) if isinstance(outcome.result, dict) else []
        label = key.split("/")[0]
        written[label] = written.get(label, 0) + sum("data" in p.get("roles", ()) for p in products)
    for stage in (s for s in run.job.stages if s.role == "tile"):
        if "folder" in type(stage.options).model_fields and written.get(stage.label, 1) == 0:
            raise InputError(run.job.source, f"stages[{run.job.stages.index(stage)}] ({stage.name}) wrote no data "
                                             "on any tile; check its inputs (e.g. footprints that meet no points)")
