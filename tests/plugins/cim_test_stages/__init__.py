"""A tiny third-party stage package: its stages are registered through the entry points of its ``.dist-info``
(group ``cim.stages``), exactly as an installed plug-in's would be. Tests put ``tests/plugins`` on the path."""

from __future__ import annotations

from pydantic import Field

from cim.errors import InputError
from cim.fileutil import write_text_atomic
from cim.pipeline.stage import Product, Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud


class FailOptions(StageOptions):
    tile: str = ""


class FailOnTile(Stage):
    """Fails on one tile, passes the others through."""

    name = "test.fail_on_tile"
    Options = FailOptions
    modifies_points = True  # later stages read its output, so they wait for it

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        if ctx.tile.key == self.options.tile:
            raise InputError(f"tile {ctx.tile.key}", "synthetic failure")
        return TileResult(cloud=cloud)


class MarkOptions(StageOptions):
    value: int = 0
    folder: str = Field("marks", description="output folder inside the job's output folder")


class WriteMark(Stage):
    """Writes ``<folder>/<tile>.txt``: its option value and the tile's point count (artefact 'marks')."""

    name = "test.mark"
    Options = MarkOptions
    produces = ("marks",)

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        path = ctx.product_dir / f"{ctx.tile.key}.txt"
        write_text_atomic(path, f"{self.options.value} {len(cloud)}")
        return TileResult(products=[Product(ctx.relative(path), "text", "text/plain")])


class ReadMarks(Stage):
    """Reads the marks of the same tile, wherever the job's test.mark stage wrote them."""

    name = "test.read_marks"
    consumes = ("marks",)

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        return TileResult(stats={"mark": (self.input_dir("marks", ctx) / f"{ctx.tile.key}.txt").read_text()})


class SilentOptions(StageOptions):
    folder: str = Field("silent", description="output folder inside the job's output folder")


class Silent(Stage):
    """Has an output folder but writes nothing (a job must not end with an empty product and exit 0)."""

    name = "test.silent"
    Options = SilentOptions

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        return TileResult(stats={"objects": 0})
