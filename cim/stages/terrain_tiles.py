"""``tiles.terrain``: the job's DTM as a 3D Tiles 1.1 mesh tileset (ground for the viewer)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cim.pipeline.stage import JobContext, Product, Stage, StageOptions


class TerrainTilesOptions(StageOptions):
    folder: str = Field("3dtiles-terrain", description="output folder (tileset.json lands here)")
    step: int = Field(2, ge=1, le=64, description="a mesh vertex every `step` DTM cells (1 = every cell)")
    allow_ballpark: bool = Field(False, description="accept a ballpark vertical transformation (heights metres "
                                                    "off; warns)")


class TerrainTiles(Stage):
    name = "tiles.terrain"
    summary = "3D Tiles 1.1 terrain mesh from the DTM (glTF triangles through the DTM cells, ECEF placement)"
    Options = TerrainTilesOptions
    consumes = ("dtm",)
    produces = ("tileset.terrain",)
    worker_imports = ("cim.tiles3d.terrain",)

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        from cim.tiles3d.terrain import write_terrain_tiles

        o = self.options
        done = write_terrain_tiles(ctx.product_dir, sorted(self.input_dir("dtm", ctx).glob("*.tif")), ctx.crs,
                                   step=o.step, allow_ballpark=o.allow_ballpark)
        return [Product(ctx.relative(ctx.product_dir / "tileset.json"), "3dtiles", "application/json",
                        roles=("data", "terrain"), properties=done)]
