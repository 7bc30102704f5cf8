"""Readers, the tiler and the LAS writer: ``read.las``, ``read.ply``, ``read.e57``, ``tile``, ``write.las``.

A reader stage names its input files and opens each as a :class:`cim.io.readers.PointSource` (one module of
:mod:`cim.io` per format); the planner takes CRS, bounds, point counts and chunks from the sources alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pyproj
from pydantic import Field, model_validator

from cim.io import las
from cim.io.readers import PointSource
from cim.pipeline.stage import Product, Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud


class ReadOptions(StageOptions):
    files: list[str] = Field(min_length=1, description="input files or glob patterns")
    crs: str | None = Field(None, description="CRS of these files, overriding what they declare")
    chunk_size: int = Field(las.DEFAULT_CHUNK, gt=0, description="points per streamed chunk")
    path_fields: ClassVar[tuple[str, ...]] = ("files",)


class ReaderStage(Stage):
    """Base of the reader stages: the job's points come from the files they name."""

    Options = ReadOptions
    role = "reader"

    def open(self, path: Path, crs: str | pyproj.CRS | None) -> PointSource:
        """Open one input file (``crs`` overrides the CRS it declares)."""
        raise NotImplementedError


class ReadLas(ReaderStage):
    name = "read.las"
    summary = "Read LAS 1.2-1.4, LAZ and COPC files (streamed in chunks; COPC queried by the job area)"

    def open(self, path: Path, crs: str | pyproj.CRS | None) -> PointSource:
        return las.open_source(path, crs)


class ReadPly(ReaderStage):
    name = "read.ply"
    summary = "Read PLY point clouds (ASCII or binary; vertex properties become dimensions)"

    def open(self, path: Path, crs: str | pyproj.CRS | None) -> PointSource:
        from cim.io import ply

        return ply.open_source(path, crs)


class ReadE57(ReaderStage):
    name = "read.e57"
    summary = "Read E57 scanner / mobile-mapping deliveries (every scan placed by its pose; intensity, colour)"

    def open(self, path: Path, crs: str | pyproj.CRS | None) -> PointSource:
        from cim.io import e57

        return e57.open_source(path, crs)


class TileOptions(StageOptions):
    size: float = Field(250.0, gt=0, description="tile edge length in CRS units; tiles align to multiples of it")
    buffer: float = Field(20.0, ge=0, description="context margin around each tile, in CRS units")

    @model_validator(mode="after")
    def _buffer_smaller_than_tile(self) -> "TileOptions":
        if self.buffer >= self.size:
            raise ValueError(f"buffer ({self.buffer}) must be smaller than size ({self.size})")
        return self


class TileStage(Stage):
    name = "tile"
    summary = "Cut the job area into aligned square tiles with buffers (out-of-core)"
    Options = TileOptions
    role = "tiler"


class WriteLasOptions(StageOptions):
    folder: str = Field("las", description="output folder inside the job's output folder")
    compress: bool = Field(True, description="write LAZ (True) or LAS (False)")
    scale: float = Field(0.001, gt=0, description="coordinate resolution in CRS units")
    keep_buffer: bool = Field(False, description="also write the tile's buffer points")


class WriteLas(Stage):
    name = "write.las"
    summary = "Write each tile's points as LAS 1.4 / LAZ with its CRS"
    Options = WriteLasOptions
    produces = ("las",)

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        out = cloud if self.options.keep_buffer else cloud[cloud["core"]]
        out.drop("core")
        suffix = ".laz" if self.options.compress else ".las"
        path = las.write(ctx.product_dir / f"{ctx.tile.key}{suffix}", out, scale=self.options.scale,
                         creation_date=ctx.acquired_date)
        product = Product(
            path=ctx.relative(path),
            kind="pointcloud",
            media_type="application/vnd.laszip" if self.options.compress else "application/vnd.las",
            properties=pointcloud_properties(out),
        )
        return TileResult(products=[product], stats={"points": len(out)})


def pointcloud_properties(cloud: PointCloud) -> dict:
    """STAC pointcloud-extension facts about a cloud (count, schema, bounds, statistics of z)."""
    b = cloud.bounds
    return {
        "pc:count": len(cloud),
        "pc:type": "lidar",
        "pc:schemas": [{"name": n, "size": cloud[n].dtype.itemsize, "type": _stac_type(cloud[n].dtype.kind)}
                       for n in cloud.names],
        "bounds": [round(v, 3) for v in b],
    }


def _stac_type(kind: str) -> str:
    return {"f": "floating", "u": "unsigned", "i": "signed", "b": "unsigned"}.get(kind, "floating")
