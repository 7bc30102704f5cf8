"""Building stages: ``buildings.lod1``, ``buildings.lod2``, ``write.cityjson``, ``tiles.buildings``.

``buildings.lod1`` / ``buildings.lod2`` model the buildings whose footprint's representative point lies in the
tile (each building once, whatever the tile cut; the tile buffer gives the points of buildings that cross the
edge) and write ``<folder>/<tile>.city.jsonl`` (CityJSONSeq) plus a ``report.json`` in ``finish``.
``write.cityjson`` merges those into one CityJSON 2.0 file (and a CityJSONSeq); ``tiles.buildings`` writes a
3D Tiles 1.1 tileset of them.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyproj
from pydantic import Field

from cim.buildings.footprints import Footprint, read_footprints
from cim.buildings.model import BuildingModel, ReconstructionParams
from cim.buildings.planes import PlaneParams
from cim.buildings.run import geometries, models_from_cityjson, reconstruct_cloud, summarise
from cim.cityjson import BuildingGeometry, write_cityjson_streamed, write_cityjsonseq
from cim.errors import CimWarning
from cim.fileutil import write_text_atomic
from cim.pipeline.stage import JobContext, Product, Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud

CITYJSON_MEDIA = "application/city+json"
CITYJSONSEQ_MEDIA = "application/city+json-seq"


class BuildingsOptions(StageOptions):
    footprints: str | None = Field(None, description="footprint file (GeoPackage, GeoJSON, Shapefile, SpatiaLite);"
                                                     " without it footprints are derived from the building points")
    footprints_crs: str | None = Field(None, description="CRS of the footprint file when it declares none")
    footprints_layer: str | None = Field(None, description="layer of the footprint file (default: the first)")
    id_field: str | None = Field(None, description="footprint attribute holding the building id")
    dtm: str | None = Field(None, description="DTM GeoTIFF (e.g. from the terrain stages) for ground heights; "
                                              "default: ground points around each footprint")
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
                id_field: str | None) -> tuple[Footprint, ...]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CimWarning)
        fps = read_footprints(path, pyproj.CRS.from_wkt(crs_wkt), layer=layer, id_field=id_field,
                              source_crs=source_crs)
    for w in caught:
        warnings.warn(str(w.message), CimWarning, stacklevel=2)
    return tuple(fps)


@functools.lru_cache(maxsize=2)
def _dtm(path: str, identity: tuple[int, int, int]):
    from cim.terrain.raster import read_raster

    return read_raster(path)


class _BuildingsStage(Stage):
    Options = BuildingsOptions
    produces = ("buildings",)
    lod2: ClassVar[bool] = True

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        o = self.options
        fps = None
        if o.footprints:
            fps = list(_footprints(o.footprints, _identity(o.footprints), ctx.crs.to_wkt(), o.footprints_crs,
                                   o.footprints_layer, o.id_field))
        models = reconstruct_cloud(cloud, fps, o.params(), core_bounds=ctx.tile.core_bounds, lod2=self.lod2,
                                   classify=o.classify, building_classes=tuple(o.building_classes),
                                   dtm=_dtm(o.dtm, _identity(o.dtm)) if o.dtm else None,
                                   building_points=o.building_points)
        bx0, by0, bx1, by1 = ctx.tile.buffered_bounds
        for m in models:
            x0, y0, x1, y1 = m.footprint.bounds
            if x0 < bx0 or y0 < by0 or x1 > bx1 or y1 > by1:
                m.attributes["tile_buffer_exceeded"] = True
                ctx.warn(f"building {m.id} reaches beyond the tile buffer; raise tile.buffer for complete points")
        stats: dict[str, Any] = summarise(models)
        products = []
        if models:
            path = ctx.product_dir / f"{ctx.tile.key}.city.jsonl"
            write_cityjsonseq(path, geometries(models), ctx.crs)
            products.append(Product(ctx.relative(path), "cityjson", CITYJSONSEQ_MEDIA,
                                    properties={"buildings": len(models)}))
        return TileResult(products=products, stats=stats)

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        models = _tile_models(ctx.product_dir)
        report = {"tiles": len(results), **summarise(models)}
        warned = [w for r in results for w in r.get("warnings", [])]
        if warned:
            report["warnings"] = warned
        path = ctx.product_dir / "report.json"
        write_text_atomic(path, json.dumps(report, sort_keys=True, indent=1))
        return [Product(ctx.relative(path), "report", "application/json", roles=("metadata",))]


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
    return [m.geometries() for m in models_from_cityjson(path)]


def _tile_models(folder: Path) -> list[BuildingModel]:
    """The models in a buildings stage's per-tile files, sorted by id."""
    files = sorted(folder.glob("*.city.jsonl"))
    return sorted((m for f in files for m in models_from_cityjson(f)), key=lambda m: m.id)


class _MergedStage(Stage):
    """A stage that works in ``finish`` only, on the models the job's buildings stage wrote per tile."""

    consumes = ("buildings",)

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

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        from cim.buildings.tiles import write_building_tiles

        models = self.models(ctx)
        if not models:
            return []
        path = write_building_tiles(ctx.product_dir, models, ctx.crs, tile_size=self.options.tile_size)
        return [Product(ctx.relative(path), "3dtiles", "application/json",
                        properties={"buildings": len(models)})]
