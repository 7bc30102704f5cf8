"""3D Tiles 1.1 point clouds: ``tiles.pointcloud``."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, field_validator

from cim.errors import CimWarning
from cim.pipeline.reduction import BlockFinish
from cim.pipeline.stage import JobContext, Product, Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud
from cim.tiles3d.glb import meshopt_encoder
from cim.tiles3d.pointcloud import DEFAULT_PROPERTIES, TilesOptions, build_tile
from cim.tiles3d.upper import block_of, build_block, build_upper_levels, job_summary


class PointTilesOptions(StageOptions):
    folder: str = Field("3dtiles/pointcloud", description="output folder inside the job's output folder")
    leaf_points: int = Field(60_000, ge=1000, description="a node with at most this many points is a leaf")
    grid_bits: int = Field(7, ge=4, le=10, description="log2 of the sampling grid per node edge (7 = 128 cells)")
    error_scale: float = Field(4.0, gt=0, description="geometric error = error_scale x node sampling spacing")
    color_depth: Literal["auto", "8", "16"] = Field("auto", description="bits of the RGB values; auto detects "
                                                    "8-bit values stored in 16-bit fields")
    properties: list[str] = Field(list(DEFAULT_PROPERTIES), description="standard dimensions to keep when present")
    extra: list[str] = Field([], description="further dimensions to keep (must exist)")
    allow_ballpark: bool = Field(False, description="accept a ballpark vertical transformation (heights metres "
                                                    "off; warns)")
    implicit: bool = Field(False, description="write each tile's octree as 3D Tiles implicit tiling (OCTREE "
                                              "subtrees) instead of explicit tile JSON")
    meshopt: bool = Field(False, description="compress the glTF contents with EXT_meshopt_compression (needs the "
                                             "meshoptimizer package; viewers must support the extension)")
    name: str = Field("point cloud", description="dataset name in the tileset metadata")

    @field_validator("meshopt")
    @classmethod
    def _encoder_installed(cls, value: bool) -> bool:
        if value:
            try:
                meshopt_encoder()
            except ImportError as exc:
                raise ValueError(str(exc)) from None
        return value

    def tiles_options(self) -> TilesOptions:
        return TilesOptions(self.leaf_points, self.grid_bits, self.error_scale, self.color_depth,
                            tuple(self.properties), tuple(self.extra), self.allow_ballpark, self.implicit,
                            self.meshopt)


def _bounds(tiles: list[dict[str, Any]]) -> list[float] | None:
    """(minx, miny, minz, maxx, maxy, maxz) of all tiles' points in the source CRS (for the STAC item)."""
    if not all("xy_bounds" in t for t in tiles):
        return None
    xy = [t["xy_bounds"] for t in tiles]
    z = [t["z_range"] for t in tiles]
    return [min(b[0] for b in xy), min(b[1] for b in xy), min(r[0] for r in z),
            max(b[2] for b in xy), max(b[3] for b in xy), max(r[1] for r in z)]


def _tiles(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stats of the tiles with points."""
    return [r["stats"] for r in results if r.get("stats", {}).get("points")]


class PointTiles(BlockFinish, Stage):
    name = "tiles.pointcloud"
    summary = "3D Tiles 1.1 point cloud (glTF POINTS, LOD octree, metadata, ECEF placement via geoid grids)"
    Options = PointTilesOptions
    produces = ("tileset.points",)

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        key = ctx.tile.key
        tile_dir = ctx.product_dir / "tiles" / key
        stats = build_tile(cloud, key, ctx.tile.core_bounds, ctx.crs, tile_dir, self.scratch_dir(ctx.out_dir),
                           self.options.tiles_options())
        glbs = sorted(p.relative_to(ctx.out_dir).as_posix() for p in tile_dir.glob("*.glb"))
        return TileResult(stats=stats, outputs=glbs)

    def finish_blocks(self, tile_keys: list[str]) -> dict[str, list[str]]:
        """Blocks of up to 4 x 4 tiles (quadtree nodes two levels above the tiles), when there are several."""
        blocks: dict[str, list[str]] = {}
        for key in tile_keys:
            blocks.setdefault(block_of(key), []).append(key)
        return blocks if len(blocks) > 1 else {}

    def finish_summary(self, results: list[dict[str, Any]], ctx: JobContext) -> dict[str, Any] | None:
        return job_summary(_tiles(results))

    def finish_block(self, block: str, results: list[dict[str, Any]], summary: dict[str, Any] | None,
                     ctx: JobContext) -> dict[str, Any] | None:
        return build_block(_tiles(results), summary, ctx.crs, ctx.grid.size, ctx.product_dir,
                           self.scratch_dir(ctx.out_dir), self.options.tiles_options(), block)

    def finish_merge(self, results: list[dict[str, Any]], blocks: dict[str, Any],
                     ctx: JobContext) -> list[Product]:
        tiles = _tiles(results)
        bits = {r.get("color_bits") for r in tiles if r.get("color_bits")}
        if len(bits) > 1:
            warnings.warn("tiles.pointcloud: some tiles have 8-bit and some 16-bit colours; set color_depth",
                          CimWarning, stacklevel=2)
        records = [r for r in blocks.values() if r is not None]
        doc = build_upper_levels(tiles, ctx.crs, ctx.grid.size, ctx.product_dir, self.scratch_dir(ctx.out_dir),
                                 self.options.tiles_options(), dataset={"name": self.options.name}, blocks=records)
        lon = doc["metadata"]["properties"]["originLongitude"]
        lat = doc["metadata"]["properties"]["originLatitude"]
        return [Product(
            path=ctx.relative(ctx.product_dir / "tileset.json"),
            kind="3dtiles",
            media_type="application/json",
            roles=("data",),
            properties={"points": sum(r["points"] for r in tiles), "tiles": len(tiles),
                        "origin_lon_lat": [lon, lat],
                        **({"bounds": b} if (b := _bounds(tiles)) else {})},
        )]
