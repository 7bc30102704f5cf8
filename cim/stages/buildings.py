"""Building stages: ``buildings.lod1``, ``buildings.lod2``, ``write.cityjson``, ``tiles.buildings``.

``buildings.lod1`` / ``buildings.lod2`` model the buildings whose footprint's representative point lies in the
tile (each building once, whatever the tile cut; the tile buffer gives the points of buildings that cross the
edge) and write ``<folder>/<tile>.city.jsonl`` (CityJSONSeq) plus a ``report.json`` in ``finish``. Footprints
(or derived outlines) reaching beyond the tile buffer are modelled after the tiles, in the finish's block tasks,
from the points of every tile they touch (:mod:`cim.buildings.large`, ``<folder>/large.city.jsonl``). Ground
heights come from the ``dtm`` file, else the job's DTM (``raster.dtm``, a reused artefact), else the ground points
around each footprint.
``write.cityjson`` merges those into one CityJSON 2.0 file (and a CityJSONSeq); ``tiles.buildings`` writes a
3D Tiles 1.1 tileset of them.
"""

from __future__ import annotations

import functools
import json
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pyproj
from pydantic import Field

from cim.cityjson import BuildingGeometry, write_cityjson_streamed, write_cityjsonseq
from cim.errors import CimWarning
from cim.fileutil import write_text_atomic
from cim.pipeline.reduction import BlockFinish
from cim.pipeline.stage import JobContext, Product, Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud
from cim.terrain.grid import GridSpec
from cim.tiling import TileGrid

if TYPE_CHECKING:
    from cim.buildings.footprints import Footprint
    from cim.buildings.large import Excess
    from cim.buildings.model import BuildingModel, ReconstructionParams

#: The modules the buildings' tile and finish steps import (scipy, shapely, rasterio): a worker's, not the driver's.
_MODELLING = ("cim.buildings.run", "cim.buildings.large", "cim.buildings.ground_dtm", "cim.terrain.ground",
              "cim.terrain.raster")

CITYJSON_MEDIA = "application/city+json"
CITYJSONSEQ_MEDIA = "application/city+json-seq"


class BuildingsOptions(StageOptions):
    footprints: str | None = Field(None, description="footprint file (GeoPackage, GeoJSON, Shapefile, SpatiaLite);"
                                                     " without it footprints are derived from the building points")
    footprints_crs: str | None = Field(None, description="CRS of the footprint file when it declares none")
    footprints_layer: str | None = Field(None, description="layer of the footprint file (default: the first)")
    id_field: str | None = Field(None, description="footprint attribute holding the building id")
    dtm: str | None = Field(None, description="DTM GeoTIFF for ground heights; default: the job's DTM "
                                              "(raster.dtm), else ground points around each footprint")
    folder: str = Field("buildings", description="output folder inside the job's output folder")
    classify: Literal["auto", "always", "never"] = Field(
        "auto", description="ground classification (SMRF) when the points have no class 2 (auto) / always / never")
    building_classes: list[int] = Field([6], description="ASPRS classes of building points (when present)")
    building_points: Literal["auto", "classes", "height"] = Field(
        "auto", description="with footprints: building points by class, or by height (every point inside the "
                            "footprint above height_threshold over its ground, whatever its class); auto: by "
                            "height when over 10 % of the points inside footprints are labelled 1 or 2")
    height_threshold: float = Field(2.0, ge=0, description="building points by height: this far above the ground")
    lod1_percentile: float = Field(70.0, ge=0, le=100, description="roof height percentile of LoD1.2")
    ground_percentile: float = Field(10.0, ge=0, le=100, description="percentile of ground points around the "
                                                                     "footprint")
    ground_buffer: float = Field(3.0, gt=0, description="ground points within this distance of the footprint")
    max_extension: float = Field(2.0, ge=0, description="a roof plane never reaches further than this from its "
                                                        "points (m)")
    plane_epsilon: float = Field(0.15, gt=0, description="max point-to-plane distance of roof plane inliers (m)")
    min_plane_points: int = Field(12, ge=3, description="smallest roof plane (points)")
    partition_cell: float = Field(0.5, gt=0, description="raster cell of the roof partition (m)")
    path_fields: ClassVar[tuple[str, ...]] = ("footprints", "dtm")

    def params(self) -> ReconstructionParams:
        from cim.buildings.model import ReconstructionParams
        from cim.buildings.planes import PlaneParams

        return ReconstructionParams(
            lod1_percentile=self.lod1_percentile, ground_percentile=self.ground_percentile,
            ground_buffer=self.ground_buffer, max_extension=self.max_extension,
            partition_cell=self.partition_cell, height_threshold=self.height_threshold,
            planes=PlaneParams(epsilon=self.plane_epsilon, min_points=self.min_plane_points),
        )


def _identity(path: str) -> tuple[int, int, int]:
    """(inode, size, mtime) of a file: part of the cache keys below, so that a changed file is read again."""
    stat = Path(path).stat()
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _footprints(path: str, identity: tuple[int, int, int], crs_wkt: str, source_crs: str | None, layer: str | None,
                id_field: str | None) -> tuple[tuple[Footprint, ...], tuple[str, ...]]:
    """The footprints and the warnings reading them gave (repeated by every reader of the cached value)."""
    from cim.buildings.footprints import read_footprints

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CimWarning)
        fps = read_footprints(path, pyproj.CRS.from_wkt(crs_wkt), layer=layer, id_field=id_field,
                              source_crs=source_crs)
    return tuple(fps), tuple(str(w.message) for w in caught)


@functools.lru_cache(maxsize=2)
def _dtm(path: str, identity: tuple[int, int, int]):
    from cim.terrain.raster import read_raster

    return read_raster(path)


class _BuildingsStage(BlockFinish, Stage):
    Options = BuildingsOptions
    produces = ("buildings",)
    reuses = ("dtm",)  # the job's DTM (raster.dtm) gives the ground heights unless the dtm option names a file
    worker_imports = _MODELLING
    lod2: ClassVar[bool] = True
    _planned: tuple[pyproj.CRS, TileGrid] | None = None  # the job's CRS and grid, set at planning
    _code: str | None = None  # the code hash of the stage module, set at planning

    def _footprint_key(self, crs: pyproj.CRS) -> tuple[Any, ...]:
        o = self.options
        return (o.footprints, _identity(o.footprints), crs.to_wkt(), o.footprints_crs, o.footprints_layer,
                o.id_field)

    def _read(self, crs: pyproj.CRS) -> list[Footprint]:
        """The footprints in the job CRS (none without a footprints file), without repeating the read warnings."""
        return list(_footprints(*self._footprint_key(crs))[0]) if self.options.footprints else []

    def footprints(self, crs: pyproj.CRS) -> list[Footprint] | None:
        """The footprints in the job CRS (None without a footprints file), with the warnings reading them gave."""
        if not self.options.footprints:
            return None
        fps, messages = _footprints(*self._footprint_key(crs))
        for message in messages:
            warnings.warn(message, CimWarning, stacklevel=2)
        return list(fps)

    def large(self, crs: pyproj.CRS, grid: TileGrid) -> Excess | None:
        """The footprints reaching beyond the tile buffer (None without any, or without footprints)."""
        return _excess(*self._footprint_key(crs), grid.size, grid.buffer) if self.options.footprints else None

    def reconstruct(self, cloud: PointCloud, fps: list[Footprint] | None, **kwargs: Any) -> list[BuildingModel]:
        from cim.buildings.run import reconstruct_cloud

        o = self.options
        return reconstruct_cloud(cloud, fps, o.params(), lod2=self.lod2, classify=o.classify,
                                 building_classes=tuple(o.building_classes), building_points=o.building_points,
                                 **kwargs)

    def context_margin(self) -> float:
        """How far around a footprint its ground points and DTM samples are looked for."""
        return max(3 * self.options.ground_buffer, 10.0) + self.options.ground_buffer

    def plan(self, ctx: JobContext) -> None:
        """Warn before any work when footprints reach beyond the tile buffer (each modelled in a task of its own
        after the tiles); remember the job's CRS and grid for :meth:`finish_blocks`."""
        self._planned = (ctx.crs, ctx.grid)
        self._code = _code_hash(type(self).__module__)  # here, not in the workers' threads (see _code_hash)
        large = self.large(ctx.crs, ctx.grid)
        if large:
            warnings.warn(large.message(ctx.grid.buffer), CimWarning, stacklevel=2)

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        from cim.buildings.footprints import owner_tile
        from cim.buildings.large import clip, context_box, leaves, save_pieces
        from cim.buildings.run import derived_outlines, geometries, ground_mask, summarise

        o = self.options
        fps = self.footprints(ctx.crs)
        ground = ground_mask(cloud, o.classify)
        scratch = self.scratch_dir(ctx.out_dir) / f"{ctx.tile.key}.cols"
        margin = self.context_margin()
        outlines, held = None, []
        if fps is None:  # derived outlines cut by the buffered square or larger than their tile's: after the tiles
            outlines = derived_outlines(cloud, ground, o.building_classes)
            owner = {f.id: ctx.grid.tile(*owner_tile(f, ctx.grid.size)).buffered_bounds for f in outlines}
            skip = {f.id for f in outlines if leaves(f, ctx.tile.buffered_bounds) or leaves(f, owner[f.id])}
            boxes = [c for f in outlines if f.id in skip
                     if (c := clip(context_box(f, margin), ctx.tile.core_bounds))]
            saved = save_pieces(scratch, cloud, ground, {DERIVED: boxes} if boxes else {})
            held = [list(c) for c in boxes] if saved else []
        else:
            large = self.large(ctx.crs, ctx.grid)
            skip = set(large.reach) if large else set()
            near = [f for f in fps if f.id in skip and _meets(context_box(f, margin), ctx.tile.core_bounds)]
            save_pieces(scratch, cloud, ground, {f.id: [context_box(f, margin)] for f in near})
        dtm = self.tile_dtm(cloud, ctx)
        models = self.reconstruct(cloud, fps, core_bounds=ctx.tile.core_bounds, dtm=dtm, ground=ground, skip=skip,
                                  outlines=outlines)
        stats: dict[str, Any] = summarise(models)
        if held:
            stats[HELD] = held
        products = []
        if models:
            path = ctx.product_dir / f"{ctx.tile.key}.city.jsonl"
            write_cityjsonseq(path, geometries(models), ctx.crs)
            products.append(Product(ctx.relative(path), "cityjson", CITYJSONSEQ_MEDIA,
                                    properties={"buildings": len(models)}))
        return TileResult(products=products, stats=stats)

    def tile_dtm(self, cloud: PointCloud, ctx: TileContext) -> tuple[np.ndarray, GridSpec] | None:
        """The DTM for the tile's ground heights: the ``dtm`` file, else the job's DTM (see
        :func:`cim.buildings.ground_dtm.tile_dtm`)."""
        from cim.buildings.ground_dtm import tile_dtm

        if self.options.dtm:
            return _dtm(self.options.dtm, _identity(self.options.dtm))
        folder = self.input_dir("dtm", ctx)
        return tile_dtm(folder / f"{ctx.tile.key}.tif", cloud, ctx.tile.buffered_bounds) if folder else None

    def finish_blocks(self, tile_keys: list[str]) -> dict[str, list[str]]:
        """With footprints, one block per footprint reaching beyond the tile buffer (named by its id): the job's
        tiles its points and ground context may come from ({} without any such footprint, or before
        :meth:`plan`). Without footprints, one block per 4 x 4 tiles: the derived outlines larger than the buffer
        are found by the tiles, each group of them is modelled by the block of the first tile that held it."""
        from cim.buildings.large import context_box

        if not self.options.footprints:
            blocks: dict[str, list[str]] = {}
            for key in sorted(tile_keys):
                blocks.setdefault(_block_of(key), []).append(key)
            return blocks
        if self._planned is None:
            return {}
        crs, grid = self._planned
        large = self.large(crs, grid)
        if not large:
            return {}
        keys = set(tile_keys)
        blocks = {}
        for fp in self._read(crs):
            if fp.id in large.reach:
                tiles = [t.key for t in grid.tiles_covering(context_box(fp, self.context_margin())) if t.key in keys]
                if tiles:
                    blocks[fp.id] = tiles
        return blocks

    def finish_summary(self, results: list[dict[str, Any]], ctx: JobContext) -> dict[str, Any] | None:
        """Without footprints: the groups of overlapping regions the tiles held (a region: the tile's core
        points around a derived outline larger than the buffer), each with its tiles, by block. With footprints,
        nothing (a block needs only the pieces its tiles wrote)."""
        from cim.buildings.large import box_groups

        if self.options.footprints:
            return None
        held = [(r["tile"], box) for r in sorted(results, key=lambda r: r["tile"]) for box in r["stats"].get(HELD, [])]
        groups: dict[str, list[dict[str, Any]]] = {}
        for members in box_groups([box for _, box in held]) if held else []:
            tiles = sorted({held[i][0] for i in members})
            groups.setdefault(_block_of(tiles[0]), []).append({"tiles": tiles, "boxes": [held[i][1] for i in members]})
        return {"groups": groups}

    def finish_block(self, block: str, results: list[dict[str, Any]], summary: dict[str, Any] | None,
                     ctx: JobContext) -> dict[str, Any] | None:
        """The records of the large buildings this block modelled (see :meth:`model_cached`)."""
        if summary is not None:
            records = [self.model_derived(group, ctx) for group in summary["groups"].get(block, [])]
        else:
            fps = self._read(ctx.crs)
            fp = next(f for f in fps if f.id == block)
            records = [self.model_large(fp, fps, {r["tile"] for r in results}, ctx)]
        return {"large": [r for r in records if r is not None]}

    def finish_merge(self, results: list[dict[str, Any]], blocks: dict[str, Any],
                     ctx: JobContext) -> list[Product]:
        """The large buildings' file from the blocks' records (without blocks: each large footprint modelled here,
        one after the other) and the stage's report."""
        from cim.buildings.large import excess
        from cim.buildings.run import summarise

        large = self.large(ctx.crs, ctx.grid)
        records = [r for b in blocks.values() if b is not None for r in b["large"]]
        if large and not blocks:
            fps, tiles = self._read(ctx.crs), {r["tile"] for r in results}
            records = [r for f in fps if f.id in large.reach and (r := self.model_large(f, fps, tiles, ctx))]
        products, gathered = self.write_large(records, ctx)
        models = _tile_models(ctx.product_dir)
        report = {"tiles": len(results), **summarise(models)}
        warned = list(dict.fromkeys(w for r in results for w in r.get("warnings", [])))
        if not self.options.footprints:  # derived outlines found larger than the buffer by the tiles
            large = excess(gathered, ctx.grid.size, 0.0)
        if large:  # footprints: warned at planning (plan); recorded in both reports
            what = "footprint(s)" if self.options.footprints else "derived outline(s)"
            message = large.message(ctx.grid.buffer, what)
            warnings.warn(message, CimWarning, stacklevel=2)
            warned.append(message)
            report["buffer_exceeded"] = {"footprints" if self.options.footprints else "derived": sorted(large.reach),
                                         "largest": large.largest, "extent": [round(v, 3) for v in large.extent],
                                         "buffer_needed": round(large.buffer_needed, 3)}
        if warned:
            report["warnings"] = warned
        path = ctx.product_dir / "report.json"
        write_text_atomic(path, json.dumps(report, sort_keys=True, indent=1))
        return [*products, Product(ctx.relative(path), "report", "application/json", roles=("metadata",))]

    def model_derived(self, group: dict[str, Any], ctx: JobContext) -> dict[str, Any] | None:
        """Model the derived outlines larger than the tile buffer in one group of regions the tiles held (see
        :meth:`finish_summary`): the outlines derived again from the points of all those tiles, those that leave
        their own tile's buffered square and lie inside the regions (not cut by their edge)."""
        import shapely

        from cim.buildings.footprints import owner_tile
        from cim.buildings.large import gather, in_boxes, leaves
        from cim.buildings.run import derived_outlines

        boxes = [tuple(b) for b in group["boxes"]]
        found = gather([self.scratch_dir(ctx.out_dir) / f"{t}.cols" for t in group["tiles"]], DERIVED, ctx.crs)
        if found is None:
            return None
        inside = in_boxes(found[0].x, found[0].y, boxes)
        cloud, ground = found[0][inside], found[1][inside]
        region = shapely.union_all([shapely.box(*b) for b in boxes])
        outlines = derived_outlines(cloud, ground, self.options.building_classes)
        keep = [f for f in outlines if leaves(f, ctx.grid.tile(*owner_tile(f, ctx.grid.size)).buffered_bounds)
                and region.contains(f.polygon.buffer(1.0))]
        if not keep:
            return None
        dtm = self.window_dtm(region.bounds, ctx)
        return self.model_cached(keep[0].id, cloud, ground, dtm, outlines, {f.id for f in keep}, True, ctx)

    def model_large(self, fp: Footprint, fps: list[Footprint], tiles: set[str], ctx: JobContext
                    ) -> dict[str, Any] | None:
        """Model the large footprint ``fp`` from the points every tile gathered for it (:meth:`model_cached`).
        Like every footprint, it is modelled when it has points or its own tile is one of the job's ``tiles``
        (status ``no_points`` then); else None."""
        from cim.buildings.footprints import owner_tile
        from cim.buildings.large import context_box, gather

        box = context_box(fp, self.context_margin())
        scratch = self.scratch_dir(ctx.out_dir)
        found = gather([scratch / f"{t.key}.cols" for t in ctx.grid.tiles_covering(box)], fp.id, ctx.crs)
        if found is None and ctx.grid.tile(*owner_tile(fp, ctx.grid.size)).key not in tiles:
            return None
        cloud, ground = found or (PointCloud.empty(ctx.crs), np.zeros(0, bool))
        near = [f for f in fps if _meets(f.polygon.bounds, box)]
        return self.model_cached(fp.id, cloud, ground, self.window_dtm(box, ctx), near, {fp.id}, False, ctx)

    def model_cached(self, name: str, cloud: PointCloud, ground: np.ndarray, dtm: tuple[np.ndarray, GridSpec] | None,
                     around: list[Footprint], chosen: set[str], derived: bool, ctx: JobContext) -> dict[str, Any]:
        """Model the footprints ``chosen`` among those ``around`` (the outlines derived from ``cloud`` when
        ``derived``) into a cache file named by ``name`` and the digest of all inputs, unless that file exists
        (an unchanged building is not modelled again; with ``--force`` every one is); the block's record: ``name``,
        the file (relative to the output folder) and whether it was modelled now."""
        from cim.buildings.large import cached_model, digest, store_model

        options = self.options.model_dump(mode="json", exclude=set(self.options.path_fields))  # files: by content
        key = digest(cloud, ground, around, dtm, self.name, options, sorted(chosen), derived,
                     self._code or _code_hash(type(self).__module__), ctx.crs.to_wkt())
        path = cached_model(self.cache_dir(ctx.out_dir), name, key)
        modelled = ctx.force or not path.is_file()
        if modelled:
            models = self.reconstruct(cloud, None if derived else around, outlines=around if derived else None,
                                      ground=ground, dtm=dtm, skip={f.id for f in around} - chosen)
            store_model(path, models, ctx.crs)
        return {"id": name, "file": path.relative_to(ctx.out_dir).as_posix(), "modelled": modelled}

    def write_large(self, records: list[dict[str, Any]], ctx: JobContext) -> tuple[list[Product], list[Footprint]]:
        """``LARGE_FILE`` from the cached models of ``records`` (removed when there are none; cache files of
        buildings no longer large are removed) and the footprints of its buildings."""
        from cim.buildings.footprints import Footprint
        from cim.buildings.run import geometries, models_from_cityjson

        path = ctx.product_dir / LARGE_FILE
        files = [ctx.out_dir / r["file"] for r in sorted(records, key=lambda r: r["id"])]
        cache = self.cache_dir(ctx.out_dir)
        for stale in sorted(set(cache.glob("*.city.jsonl")) - set(files)):
            stale.unlink()
        models = [m for f in files for m in models_from_cityjson(f)]
        if not models:
            path.unlink(missing_ok=True)
            return [], []
        write_cityjsonseq(path, geometries(models), ctx.crs)
        return ([Product(ctx.relative(path), "cityjson", CITYJSONSEQ_MEDIA, properties={"buildings": len(models)})],
                [Footprint(m.id, m.footprint) for m in models])

    def cache_dir(self, out_dir: Path) -> Path:
        """Where the models of the large buildings are kept between runs (``<out>/.cim/work/<stage label>.large``)."""
        return self.scratch_dir(out_dir).with_name(f"{self.label}.large")

    def window_dtm(self, box: tuple[float, float, float, float], ctx: JobContext) -> tuple[np.ndarray, GridSpec] | None:
        """The DTM around ``box`` after the tiles: the ``dtm`` file, else the job's DTM mosaic (``<folder>.vrt``)."""
        from cim.buildings.ground_dtm import dtm_window, usable

        if self.options.dtm:
            return _dtm(self.options.dtm, _identity(self.options.dtm))
        folder = self.input_dir("dtm", ctx)
        mosaic = folder.with_name(f"{folder.name}.vrt") if folder else None
        return usable(dtm_window(mosaic, box)) if mosaic and mosaic.is_file() else None


#: The per-stage file of the buildings larger than the tile buffer (modelled in ``finish``).
LARGE_FILE = "large.city.jsonl"
#: The frame name of the points a tile held around derived outlines larger than the buffer, and the tile result's
#: stats key of their regions.
DERIVED, HELD = "derived", "derived_held"


def _block_of(tile_key: str) -> str:
    """The block of 4 x 4 tiles holding tile ``ix_iy`` (derived outlines larger than the buffer)."""
    ix, iy = (int(v) for v in tile_key.split("_"))
    return f"{ix >> 2}_{iy >> 2}"


def _meets(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


_CODE_LOCK = threading.Lock()


def _code_hash(module: str) -> str:
    """The code hash of a stage module (as in the step fingerprints), once per process: at planning, else under a
    lock (CPython 3.11's ``ast`` fails with "AST constructor recursion depth mismatch" when threads parse at once)."""
    with _CODE_LOCK:
        return _code_hashes(module)


@functools.cache
def _code_hashes(module: str) -> str:
    from cim.runner.fingerprints import CodeHashes

    return CodeHashes().code_hash(module)


@functools.lru_cache(maxsize=4)
def _excess(*key: Any) -> Excess | None:
    """:func:`cim.buildings.large.excess` of the footprints ``_footprints(*key[:-2])`` on a grid of tile size
    ``key[-2]`` and buffer ``key[-1]`` (once per process, not per tile)."""
    from cim.buildings.large import excess

    return excess(_footprints(*key[:-2])[0], key[-2], key[-1])


class BuildingsLod1(_BuildingsStage):
    name = "buildings.lod1"
    summary = "LoD1.2 building blocks (roof percentile, ground percentile) per footprint, with attributes"
    lod2 = False


class BuildingsLod2(_BuildingsStage):
    name = "buildings.lod2"
    summary = "LoD2.2 building solids (roof planes, footprint partition, roof type) plus LoD1.2 fallback"
    lod2 = True


def _file_buildings(path: Path) -> list[list[BuildingGeometry]]:
    """The buildings of one per-tile file, each as its geometries."""
    from cim.buildings.run import models_from_cityjson

    return [m.geometries() for m in models_from_cityjson(path)]


def _tile_models(folder: Path) -> list[BuildingModel]:
    """The models in a buildings stage's per-tile files, sorted by id."""
    from cim.buildings.run import models_from_cityjson

    files = sorted(folder.glob("*.city.jsonl"))
    return sorted((m for f in files for m in models_from_cityjson(f)), key=lambda m: m.id)


class _MergedStage(Stage):
    """A stage that works in ``finish`` only, on the models the job's buildings stage wrote per tile."""

    consumes = ("buildings",)
    worker_imports = ("cim.buildings.run",)

    def models(self, ctx: JobContext) -> list[BuildingModel]:
        return _tile_models(self.input_dir("buildings", ctx))


class WriteCityJsonOptions(StageOptions):
    folder: str = Field("", description="output folder inside the job's output folder")
    name: str = Field("buildings", description="file name stem (<name>.city.json, <name>.city.jsonl)")
    scale: float = Field(0.001, gt=0, description="vertex quantisation step (CRS units)")
    sequence: bool = Field(True, description="also write CityJSONSeq (one building per line, for large areas)")


class WriteCityJson(_MergedStage):
    name = "write.cityjson"
    summary = "Merge the building models into CityJSON 2.0 (+ CityJSONSeq)"
    Options = WriteCityJsonOptions
    produces = ("cityjson",)

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        """Both files streamed from the buildings stage's per-tile files, one tile's models in memory at a time."""
        o = self.options
        meta = {"title": f"{ctx.name}: buildings"}
        if ctx.acquired:
            meta["referenceDate"] = ctx.acquired[:10]
        path = ctx.product_dir / f"{o.name}.city.json"
        seq = ctx.product_dir / f"{o.name}.city.jsonl" if o.sequence else None
        files = sorted(self.input_dir("buildings", ctx).glob("*.city.jsonl"))
        count = write_cityjson_streamed(path, seq, [functools.partial(_file_buildings, f) for f in files], ctx.crs,
                                        self.scratch_dir(ctx.out_dir), scale=o.scale, metadata=meta)
        products = [Product(ctx.relative(path), "cityjson", CITYJSON_MEDIA, properties={"buildings": count})]
        if seq is not None:
            products.append(Product(ctx.relative(seq), "cityjson", CITYJSONSEQ_MEDIA))
        return products


class TilesBuildingsOptions(StageOptions):
    folder: str = Field("3dtiles-buildings", description="output folder (tileset.json lands here)")
    tile_size: float = Field(250.0, gt=0, description="edge of the square of buildings per glb (CRS units)")


class TilesBuildings(_MergedStage):
    name = "tiles.buildings"
    summary = "3D Tiles 1.1 building meshes (glb, EXT_mesh_features + EXT_structural_metadata, ECEF placement)"
    Options = TilesBuildingsOptions
    produces = ("tileset.buildings",)
    worker_imports = ("cim.buildings.run", "cim.buildings.tiles")

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        from cim.buildings.tiles import write_building_tiles

        models = self.models(ctx)
        if not models:
            return []
        path = write_building_tiles(ctx.product_dir, models, ctx.crs, tile_size=self.options.tile_size)
        return [Product(ctx.relative(path), "3dtiles", "application/json",
                        properties={"buildings": len(models)})]
