"""Readers, the tiler and the LAS writer: ``read.las``, ``read.ply``, ``read.e57``, ``tile``, ``write.las``.

A reader stage names its input files and opens each as a :class:`cim.io.readers.PointSource` (one module of
:mod:`cim.io` per format); the planner takes CRS, bounds, point counts and chunks from the sources alone.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import laspy
import numpy as np
import pyproj
from pydantic import Field, model_validator

from cim.columns import append_frame, read_frames
from cim.errors import InputError
from cim.fileutil import atomic_write
from cim.io import las
from cim.io.readers import PointSource
from cim.pipeline.stage import JobContext, Product, Stage, StageOptions, TileContext, TileResult
from cim.points import INPUT_INDEX, INPUT_POSITION, Bounds, PointCloud

if TYPE_CHECKING:
    from cim.io.copc import Layout


class ReadOptions(StageOptions):
    files: list[str] = Field(min_length=1, description="input files or glob patterns")
    crs: str | None = Field(None, description="CRS of these files, overriding what they declare")
    chunk_size: int = Field(las.DEFAULT_CHUNK, gt=0, description="points per streamed chunk")
    task_points: int | None = Field(None, gt=0, description="points per partition task: a larger LAS, LAZ, COPC "
                                    "or binary PLY file is split into ranges of this many points (whole chunks), "
                                    "partitioned by separate tasks in parallel; default: one chunk")
    withheld: Literal["skip", "keep"] = Field("skip", description="'skip': points flagged withheld are left out "
                                              "of processing (and written back unchanged); 'keep': processed too")
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
    scale: float = Field(0.001, gt=0, description="coordinate resolution in CRS units (per_source: the input's)")
    keep_buffer: bool = Field(False, description="also write the tile's buffer points (not with per_source)")
    per_source: bool = Field(False, description="one file per input file, named as the input, with its points "
                             "in their order, its scale, offsets and GPS time type, instead of one file per tile")
    copc: bool = Field(False, description="with per_source: write each input as <stem>.copc.laz (COPC 1.0)")
    chunk_size: int = Field(las.DEFAULT_CHUNK, gt=0, description="per_source: an input's points are joined and "
                            "written this many at a time (memory), in its order")

    @model_validator(mode="after")
    def _copc_per_source(self) -> "WriteLasOptions":
        if self.copc and not self.per_source:
            raise ValueError("copc needs per_source = true (the write.copc stage writes a job's points as COPC)")
        return self


class WriteLas(Stage):
    name = "write.las"
    summary = "Write each tile's (or each input's) points as LAS 1.4 / LAZ with their CRS and every dimension"
    Options = WriteLasOptions
    produces = ("las",)
    #: withheld points are written back (with their flag and class) even when processing skips them
    sees_withheld = True

    @property
    def needs_input_index(self) -> bool:
        """Whether the points must carry :data:`cim.points.INPUT_INDEX` and ``INPUT_POSITION`` (per-source mode)."""
        return self.options.per_source

    @property
    def suffix(self) -> str:
        return ".copc.laz" if self.options.copc else ".laz" if self.options.compress else ".las"

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        out = cloud if self.options.keep_buffer and not self.options.per_source else cloud[cloud["core"]]
        out.drop("core")
        if self.options.per_source:
            self._targets(ctx)  # refuse clashing names before any piece is written
            if self.options.copc:
                return TileResult(stats={"points": len(out), **self._copc_subtrees(out, ctx)})
            pieces = _save_pieces(out, self.scratch_dir(ctx.out_dir), ctx.tile.key, self.options.chunk_size)
            return TileResult(stats={"points": len(out), "pieces": pieces})
        path = las.write(ctx.product_dir / f"{ctx.tile.key}{self.suffix}", out, scale=self.options.scale,
                         creation_date=ctx.acquired_date, extra_bytes=_extra_bytes(ctx.inputs, ctx.crs))
        return TileResult(products=[self._product(ctx, path, pointcloud_properties(out))], stats={"points": len(out)})

    def has_finish(self) -> bool:
        return self.options.per_source

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        """Per-source mode: join each input's pieces into one file named as the input, in the input's point order,
        ``chunk_size`` points at a time (COPC: the octree levels above the tiles' subtrees)."""
        targets = self._targets(ctx)
        products = []
        for index, source_path in enumerate(ctx.inputs):
            tiles = {r["tile"] for r in results if str(index) in r["stats"].get("pieces", {})}
            if not tiles:
                continue
            folder = self.scratch_dir(ctx.out_dir) / f"{index:05d}"
            if self.options.copc:
                products.append(self._assemble_copc(ctx, index, results, targets[index]))
                continue
            header = las.open_source(source_path, ctx.crs).header
            chunks = _Tally(_ordered_chunks(folder, tiles, ctx.crs))
            path = las.write(
                targets[index], chunks, scale=header.scales, offsets=header.offsets,
                adjusted_gps_time=header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD,
                crs=ctx.crs, creation_date=ctx.acquired_date, extra_bytes=las.extra_bytes_params(header))
            products.append(self._product(ctx, path, chunks.properties()))
        return products

    def _copc_subtrees(self, cloud: PointCloud, ctx: TileContext) -> dict[str, Any]:
        """Per-source COPC, in the tile's step: the tile's points of each input build the octree below the tile's
        cubes in that input's file (:func:`cim.io.copc.build_tile`, into the scratch folder); the stats ``pieces``
        (points per input) and ``copc`` (the subtrees' facts and catalog properties per input)."""
        from cim.io import copc

        index = cloud[INPUT_INDEX]
        cloud.drop(INPUT_INDEX)
        cloud.drop(INPUT_POSITION)
        pieces, built = {}, {}
        for i in np.unique(index).tolist():
            part = cloud[index == i]
            layout, adjusted = _copc_layout(ctx.inputs[i], ctx.crs, self.options.scale, ctx.grid.size)
            work = self.scratch_dir(ctx.out_dir) / f"{i:05d}" / "copc" / ctx.tile.key
            facts = copc.build_tile(part, layout, work, ctx.acquired_date, adjusted)
            pieces[str(i)] = len(part)
            built[str(i)] = {**facts, "properties": pointcloud_properties(part)}
        return {"pieces": pieces, "copc": built}

    def _assemble_copc(self, ctx: JobContext, index: int, results: list[dict[str, Any]], target: Path) -> Product:
        """Input ``index`` as COPC from its tiles' subtrees (:meth:`_copc_subtrees`): the levels above them
        (:func:`cim.io.copc.assemble`, a parent and its children in memory at a time)."""
        from cim.io import copc

        folder = self.scratch_dir(ctx.out_dir) / f"{index:05d}" / "copc"
        subtrees = [{**r["stats"]["copc"][str(index)], "work": str(folder / r["tile"])}
                    for r in sorted(results, key=lambda r: r["tile"]) if str(index) in r["stats"].get("copc", {})]
        layout, _ = _copc_layout(ctx.inputs[index], ctx.crs, self.options.scale, ctx.grid.size)
        facts = copc.assemble(subtrees, layout, ctx.crs, target, folder / "nodes", ctx.acquired_date)
        properties = {**subtrees[0]["properties"], "pc:count": facts["points"],
                      "bounds": [round(v, 3) for v in facts["bounds"]]}
        return self._product(ctx, target, properties, copc.MEDIA_TYPE)

    def _targets(self, ctx: JobContext) -> tuple[Path, ...]:
        """The per-source output of each input: its name (suffix by ``compress``/``copc``) in the stage's folder."""
        return _per_source_targets(ctx.inputs, ctx.product_dir.resolve(), self.suffix, self.options.copc)

    def _product(self, ctx: JobContext, path: Path, properties: dict[str, Any], media_type: str | None = None
                 ) -> Product:
        return Product(
            path=ctx.relative(path),
            kind="pointcloud",
            media_type=media_type or ("application/vnd.laszip" if self.options.compress else "application/vnd.las"),
            properties=properties,
        )


@functools.lru_cache(maxsize=8)
def _per_source_targets(inputs: tuple[str, ...], folder: Path, suffix: str, copc: bool) -> tuple[Path, ...]:
    """See :meth:`WriteLas._targets`; two inputs of one name, or an output that would replace its input, are an
    error (checked once per job and worker)."""
    stems = [Path(p).stem.removesuffix(".copc") if copc else Path(p).stem for p in inputs]
    targets = tuple(folder / (stem + suffix) for stem in stems)
    counts = collections.Counter(targets)
    for source, target in zip(inputs, targets):
        if counts[target] > 1:
            raise InputError(source, f"another input also writes {target.name}: per_source needs distinct input "
                                     "file names")
        if target == Path(source).resolve():
            raise InputError(source, "per_source would overwrite this input: choose another output folder")
    return targets


def _save_pieces(cloud: PointCloud, folder: Path, tile: str, chunk_size: int) -> dict[str, int]:
    """Store the tile's points of each input (exact values, compressed columns) for :meth:`WriteLas.finish`: one
    piece per input and window of ``chunk_size`` input positions (``<input>/<window>/<tile>.cols``); returns the
    points per input."""
    index = cloud[INPUT_INDEX]
    cloud.drop(INPUT_INDEX)
    window = cloud[INPUT_POSITION] // chunk_size
    order = np.lexsort((window, index))
    groups, starts = np.unique(np.column_stack([index, window])[order], axis=0, return_index=True)
    counts: dict[str, int] = {}
    for (i, w), rows in zip(groups.tolist(), np.split(order, starts[1:])):
        piece = cloud[rows]
        path = folder / f"{i:05d}" / f"{w:09d}" / f"{tile}.cols"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            append_frame(tmp, {n: piece[n] for n in piece.names})
        counts[str(i)] = counts.get(str(i), 0) + len(piece)
    return counts


def _ordered_chunks(folder: Path, tiles: set[str], crs: pyproj.CRS) -> Iterator[PointCloud]:
    """An input's points from its pieces (:func:`_save_pieces`) of ``tiles``, window by window, each in the
    input's own point order, without their position."""
    for window in sorted(p for p in folder.iterdir() if p.is_dir()):
        pieces = [PointCloud(next(read_frames(p))[1], crs) for p in sorted(window.glob("*.cols")) if p.stem in tiles]
        if not pieces:
            continue
        cloud = PointCloud.concat(pieces)
        cloud = cloud[np.argsort(cloud[INPUT_POSITION], kind="stable")]
        cloud.drop(INPUT_POSITION)
        yield cloud


@functools.lru_cache(maxsize=64)
def _copc_layout(source: str, crs: pyproj.CRS, scale: float, size: float) -> tuple[Layout, bool | None]:
    """The octree layout of an input's per-source COPC (offsets at the floor of its minimum, cubes of the tile
    size) and whether its GPS time is adjusted standard time (LAS inputs; None: from the times), once per input
    and worker."""
    from cim.io import copc

    opened = _open_input(source, crs)
    b = opened.bounds
    layout = copc.Layout(scale, tuple(float(v) for v in np.floor([b.minx, b.miny, b.minz])), size)
    return layout, getattr(opened, "adjusted_gps_time", None)


def _open_input(path: str, crs: pyproj.CRS) -> PointSource:
    """An input file by its suffix (PLY, E57, else LAS / LAZ), for the facts a per-source writer needs."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        from cim.io import ply

        return ply.open_source(path, crs)
    if suffix == ".e57":
        from cim.io import e57

        return e57.open_source(path, crs)
    return las.open_source(path, crs)


class _Tally:
    """The chunks of an iterable, passed through once, with the catalog facts of all of them afterwards."""

    def __init__(self, chunks: Iterable[PointCloud]) -> None:
        self._chunks = chunks
        self._first: dict[str, Any] | None = None  # the first chunk's properties (not the chunk: memory)
        self._count = 0
        self._bounds: list[Bounds] = []

    def __iter__(self) -> Iterator[PointCloud]:
        for cloud in self._chunks:
            if self._first is None:
                self._first = pointcloud_properties(cloud)
            self._count += len(cloud)
            self._bounds.append(cloud.bounds)
            yield cloud

    def properties(self) -> dict[str, Any]:
        """:func:`pointcloud_properties` of the points that went through."""
        assert self._first is not None, "no chunk went through"
        return {**self._first, "pc:count": self._count,
                "bounds": [round(v, 3) for v in Bounds.union(self._bounds)]}


@functools.lru_cache(maxsize=64)
def _extra_bytes(inputs: tuple[str, ...], crs: pyproj.CRS) -> list[laspy.ExtraBytesParams]:
    """How the inputs describe their extra dimensions (the first input naming a dimension wins)."""
    params: dict[str, laspy.ExtraBytesParams] = {}
    for path in (p for p in inputs if Path(p).suffix.lower() in (".las", ".laz")):  # other readers have none
        for p in las.extra_bytes_params(las.open_source(path, crs).header):
            if p is not None:
                params.setdefault(p.name, p)
    return list(params.values())


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
