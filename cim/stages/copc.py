"""Cloud-Optimized Point Cloud output: ``write.copc`` (one COPC file per job, or per block of a very large job)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from cim.io import copc
from cim.pipeline.stage import JobContext, Product, Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud
from cim.stages.io import pointcloud_properties

#: Largest block edge in integer coordinate units: offsets sit at the block's corner and LAS integers are int32.
_MAX_BLOCK_UNITS = 2**30


class WriteCopcOptions(StageOptions):
    name: str = Field("pointcloud", description="file name stem: <name>.copc.laz (<name>_<bx>_<by>.copc.laz "
                                                "when the job spans several blocks)")
    scale: float = Field(0.001, gt=0, description="coordinate resolution in CRS units")
    max_points: int = Field(100_000, ge=1000, description="points per octree node at most")
    grid: int = Field(128, ge=8, le=1024, description="sampling cells per node edge (coarser levels keep one "
                                                      "point per cell)")
    block: float = Field(1_000_000.0, gt=0, description="edge of the square blocks (CRS units) that get one "
                                                        "file each")

    @model_validator(mode="after")
    def _block_fits_integers(self) -> "WriteCopcOptions":
        if self.block / self.scale > _MAX_BLOCK_UNITS:
            raise ValueError(f"block ({self.block}) / scale ({self.scale}) exceeds {_MAX_BLOCK_UNITS} integer "
                             "units; use a smaller block or a coarser scale")
        return self


class WriteCopc(Stage):
    name = "write.copc"
    summary = "Write the job's points as COPC 1.0 (LAS 1.4 LAZ octree) with CRS and every dimension"
    Options = WriteCopcOptions
    produces = ("copc",)

    def _layout(self, block: tuple[int, int], ctx: JobContext) -> copc.Layout:
        o = self.options
        return copc.Layout(o.scale, (block[0] * o.block, block[1] * o.block, 0.0), ctx.grid.size, o.grid,
                           o.max_points)

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        out = cloud[cloud["core"]]
        out.drop("core")
        minx, miny, _, _ = ctx.tile.core_bounds
        block = (math.floor(minx / self.options.block), math.floor(miny / self.options.block))
        stats = copc.build_tile(out, self._layout(block, ctx), self.scratch_dir(ctx.out_dir) / ctx.tile.key,
                                ctx.acquired_date)
        if stats["points"]:
            stats["block"] = list(block)
            stats["properties"] = pointcloud_properties(out)
        return TileResult(stats=stats)

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        tiles = [{**r["stats"], "work": str(self.scratch_dir(ctx.out_dir) / r["tile"])} for r in results
                 if r.get("stats", {}).get("points")]
        blocks: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for t in tiles:
            blocks.setdefault(tuple(t["block"]), []).append(t)
        products = []
        for block, members in sorted(blocks.items()):
            stem = self.options.name if len(blocks) == 1 else f"{self.options.name}_{block[0]}_{block[1]}"
            path = ctx.product_dir / f"{stem}.copc.laz"
            facts = copc.assemble(members, self._layout(block, ctx), ctx.crs, path,
                                  self.scratch_dir(ctx.out_dir) / f"block_{block[0]}_{block[1]}", ctx.acquired_date)
            schemas = members[0]["properties"]["pc:schemas"]
            products.append(Product(
                path=ctx.relative(path),
                kind="pointcloud",
                media_type=copc.MEDIA_TYPE,
                properties={"pc:count": facts["points"], "pc:type": "lidar", "pc:schemas": schemas,
                            "bounds": [round(v, 3) for v in facts["bounds"]],
                            "cim:octree_nodes": facts["nodes"], "cim:octree_levels": facts["levels"]},
            ))
        return products
