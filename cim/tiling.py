"""Square tiles on a grid aligned to whole multiples of the tile size, with buffers, and out-of-core partitioning.

Points from any number of input files are streamed, chunk by chunk, into per-(file, tile) part files, so the
memory of the partitioning step is bounded by the chunk size and the memory of a tile task by the tile size.
A point belongs to exactly one tile's core (half-open squares) and to the buffer of the neighbours whose
buffered square contains it; the ``core`` dimension says which.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj

from cim.columns import append_frame, read_frames
from cim.errors import CimWarning, InputError
from cim.fileutil import atomic_dir
from cim.io import las
from cim.io.readers import PointSource
from cim.points import INPUT_INDEX, INPUT_POSITION, Bounds, PointCloud


@dataclass(frozen=True)
class Tile:
    """One square of the grid: column ``ix``, row ``iy``."""

    ix: int
    iy: int
    size: float
    buffer: float

    @property
    def key(self) -> str:
        """A stable, file-name-safe identifier such as ``1642_21918``."""
        return f"{self.ix}_{self.iy}"

    @property
    def core_bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the tile's own square (max edges excluded)."""
        return (self.ix * self.size, self.iy * self.size, (self.ix + 1) * self.size, (self.iy + 1) * self.size)

    @property
    def buffered_bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the square grown by the buffer."""
        minx, miny, maxx, maxy = self.core_bounds
        return (minx - self.buffer, miny - self.buffer, maxx + self.buffer, maxy + self.buffer)

    def in_core(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Mask of the points inside the core square."""
        minx, miny, maxx, maxy = self.core_bounds
        return (x >= minx) & (x < maxx) & (y >= miny) & (y < maxy)


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``size`` (source CRS units) aligned to multiples of the size, each with a buffer."""

    size: float = 250.0
    buffer: float = 20.0

    def __post_init__(self) -> None:
        if not self.size > 0:
            raise ValueError(f"tile size must be positive, got {self.size}")
        if not 0 <= self.buffer < self.size:
            raise ValueError(f"tile buffer must be in [0, size), got {self.buffer}")

    def tile(self, ix: int, iy: int) -> Tile:
        return Tile(ix, iy, self.size, self.buffer)

    def tile_from_key(self, key: str) -> Tile:
        ix, iy = (int(v) for v in key.split("_"))
        return self.tile(ix, iy)

    def tiles_covering(self, bounds: tuple[float, float, float, float]) -> list[Tile]:
        """Tiles whose core square meets the (minx, miny, maxx, maxy) box, row by row."""
        minx, miny, maxx, maxy = bounds
        ix0, iy0 = math.floor(minx / self.size), math.floor(miny / self.size)
        ix1, iy1 = math.floor(maxx / self.size), math.floor(maxy / self.size)
        return [self.tile(ix, iy) for iy in range(iy0, iy1 + 1) for ix in range(ix0, ix1 + 1)]

    def assign(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every (point, tile) membership: point index, tile column, tile row and core flag, grouped by tile.

        Each point appears once as core and once per neighbour whose buffered square contains it. Tiles come
        row by row; inside a tile the core points come first, each group in point order (deterministic).
        """
        ix = np.floor(x / self.size).astype(np.int64)
        iy = np.floor(y / self.size).astype(np.int64)
        fx, fy = x - ix * self.size, y - iy * self.size  # position inside the own tile
        near_edge = np.flatnonzero((np.minimum(fx, fy) < self.buffer) | (np.maximum(fx, fy) >= self.size - self.buffer))
        idx_parts, ix_parts, iy_parts = [np.arange(len(x))], [ix], [iy]
        ex, ey = fx[near_edge], fy[near_edge]
        for dx in (-1, 0, 1):
            near_x = _near(ex, dx, self.size, self.buffer)
            for dy in (-1, 0, 1):
                if dx == 0 and dy == 0:
                    continue
                sel = near_edge[near_x & _near(ey, dy, self.size, self.buffer)]
                idx_parts.append(sel)
                ix_parts.append(ix[sel] + dx)
                iy_parts.append(iy[sel] + dy)
        idx, tix, tiy = np.concatenate(idx_parts), np.concatenate(ix_parts), np.concatenate(iy_parts)
        core = np.zeros(len(idx), dtype=bool)
        core[: len(x)] = True
        order = _group_by_tile(tix, tiy)
        return idx[order], tix[order], tiy[order], core[order]


def _group_by_tile(tix: np.ndarray, tiy: np.ndarray) -> np.ndarray:
    """Stable order grouping memberships by tile row then column (a radix sort when tiles fit 16 bits)."""
    if len(tix) == 0:
        return np.arange(0)
    cols = tix.max() - tix.min() + 1
    tile = (tiy - tiy.min()) * cols + (tix - tix.min())
    if tile.max() < 2**16:
        tile = tile.astype(np.uint16)
    return np.argsort(tile, kind="stable")


def _near(frac: np.ndarray, step: int, size: float, buffer: float) -> np.ndarray:
    if step == 0:
        return np.ones(len(frac), dtype=bool)
    if step < 0:
        return frac < buffer
    return frac >= size - buffer


# ---------------------------------------------------------------------------------------------------------------
# Part files: per input file, one compressed column file per tile (:mod:`cim.columns`) holding the tile's core
# points, one frame per input chunk, plus a schema.json. Buffers are read from the neighbours' parts.

#: Changes when the part files' layout does, so that resumed runs re-partition instead of misreading old parts.
PARTS_FORMAT = "columns-2"

#: The eight neighbour directions in the order buffer points follow the core points of a tile.
_DIRECTIONS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]


def partition_file(
    source: PointSource,
    grid: TileGrid,
    crs: pyproj.CRS,
    parts_dir: Path,
    *,
    area: tuple[float, float, float, float] | None = None,
    chunk_size: int = las.DEFAULT_CHUNK,
    quanta: dict[str, tuple[float, float]] | None = None,
    input_index: int | None = None,
    points: range | None = None,
) -> dict[str, int]:
    """Stream an opened input (any reader's :class:`PointSource`) into ``parts_dir/<tile>.cols`` (atomically, as
    a whole folder); returns core counts per tile. ``points``: only this range of a seekable source's points
    (see :mod:`cim.io.chunks`; the parts of a file's ranges, loaded in range order, equal its whole parts).

    Points outside ``area`` (minx, miny, maxx, maxy) are dropped. Raises InputError for non-finite coordinates.
    ``quanta``: (scale, offset) of coordinates stored as integers (a LAS header's; see :mod:`cim.columns`). With
    ``input_index`` every point carries it as :data:`cim.points.INPUT_INDEX`, and its position in the file as
    ``INPUT_POSITION`` (counted from the range's start: increasing through the file).
    """
    core_counts: dict[str, int] = {}
    query = Bounds(area[0], area[1], -math.inf, area[2], area[3], math.inf) if area else None  # COPC reads less
    chunks = source.chunks(chunk_size, query) if points is None else \
        source.chunks(chunk_size, query, points)  # type: ignore[call-arg] - seekable sources take a range
    with atomic_dir(parts_dir) as tmp:
        fields: list[list[str]] = []  # [name, dtype string] per dimension, from the first chunk
        read = points.start if points is not None else 0
        for number, chunk in enumerate(chunks):
            if len(chunk) == 0:
                continue
            finite = np.isfinite(chunk.x) & np.isfinite(chunk.y) & np.isfinite(chunk.z)
            if not finite.all():
                raise InputError(source.path, f"{int((~finite).sum())} points have NaN or infinite coordinates")
            if input_index is not None:
                chunk.set(INPUT_INDEX, input_index)
                chunk.set(INPUT_POSITION, np.arange(read, read + len(chunk)))
            read += len(chunk)
            fields = fields or [[name, chunk[name].dtype.str] for name in chunk.names]
            _append_tiles(tmp, chunk, grid, area, number, quanta, core_counts)
        schema = {"dtype": fields, "crs": crs.to_wkt(), "source": source.path.name}
        (tmp / "schema.json").write_text(json.dumps(schema))
    return core_counts


def _in_area(x: np.ndarray, y: np.ndarray, area: tuple[float, float, float, float]) -> np.ndarray:
    minx, miny, maxx, maxy = area
    return (x >= minx) & (x < maxx) & (y >= miny) & (y < maxy)


def _append_tiles(folder: Path, chunk: PointCloud, grid: TileGrid, area: tuple[float, float, float, float] | None,
                  number: int, quanta: dict[str, tuple[float, float]] | None, core_counts: dict[str, int]) -> None:
    """Append one frame per tile with the chunk's core points of that tile (in point order)."""
    fx = chunk.x / grid.size  # tile column and row as whole floats: two arrays, no int64 copies
    np.floor(fx, out=fx)
    fy = chunk.y / grid.size
    np.floor(fy, out=fy)
    ix0, ix1, iy0, iy1 = int(fx.min()), int(fx.max()), int(fy.min()), int(fy.max())
    if area is None and ix0 == ix1 and iy0 == iy1:  # one tile: no grouping, no gathering
        key = f"{ix0}_{iy0}"
        core_counts[key] = core_counts.get(key, 0) + len(chunk)
        append_frame(folder / f"{key}.cols", {n: chunk[n] for n in chunk.names}, {"chunk": number}, quanta)
        return
    cols = ix1 - ix0 + 1
    fy -= iy0  # the tile's number in the chunk's block of tiles, row by row
    fy *= cols
    fy += fx
    fy -= ix0
    tiles = cols * (iy1 - iy0 + 1)
    rank = fy.astype(np.uint16 if tiles < 2**16 else np.int64)  # tiles itself marks points outside the area
    del fx, fy
    if area is not None:  # points outside the area get the number past the last tile
        rank[~_in_area(chunk.x, chunk.y, area)] = tiles
    order = np.argsort(rank, kind="stable")  # a radix sort for 16-bit numbers: grouped, in point order
    ranked = rank[order]
    starts = (np.flatnonzero(ranked[1:] != ranked[:-1]) + 1).tolist()
    for a, b in zip([0, *starts], [*starts, len(ranked)]):
        tile = int(ranked[a])
        if tile == tiles:  # outside the area (sorted last)
            continue
        key = f"{ix0 + tile % cols}_{iy0 + tile // cols}"
        rows = order[a:b]
        core_counts[key] = core_counts.get(key, 0) + len(rows)
        append_frame(folder / f"{key}.cols", {n: chunk[n][rows] for n in chunk.names}, {"chunk": number}, quanta)


def part_dtypes(parts_dirs: Iterable[Path]) -> dict[str, np.dtype]:
    """Every dimension the part folders hold (from their ``schema.json``), in first-seen order."""
    dtypes: dict[str, np.dtype] = {}
    for folder in parts_dirs:
        for name, spec in json.loads((Path(folder) / "schema.json").read_text())["dtype"]:
            dtypes.setdefault(name, np.dtype(spec))
    return dtypes


def neighbourhood(tile: Tile) -> list[str]:
    """The keys of the tiles whose parts may hold points of ``tile``: its own and, with a buffer, its eight
    neighbours'."""
    return [tile.key, *(f"{tile.ix - dx}_{tile.iy - dy}" for dx, dy in (_DIRECTIONS if tile.buffer > 0 else []))]


def parts_of_tiles(counts: dict[str, dict[str, int]], tiles: Iterable[Tile]) -> dict[str, list[str]]:
    """Per tile key, the part folders that may hold its points (core or buffer), in the order of ``counts``
    (part folder -> core points per tile, as :func:`partition_file` returns them; input order): a tile's load
    then reads a bounded number of folders however many inputs and ranges the job has."""
    holders: dict[str, list[int]] = {}  # tile key -> numbers of the folders holding core points of it
    for number, per_tile in enumerate(counts.values()):
        for key, n in per_tile.items():
            if n:
                holders.setdefault(key, []).append(number)
    folders = list(counts)
    return {tile.key: [folders[i] for i in sorted({i for key in neighbourhood(tile) for i in holders.get(key, ())})]
            for tile in tiles}


def load_tile(parts_dirs: Iterable[Path], tile: Tile, crs: pyproj.CRS,
              dtypes: dict[str, np.dtype] | None = None) -> PointCloud:
    """Assemble a tile's cloud from the part folders of the input files (all, or those that may hold its points:
    :func:`parts_of_tiles`), in input order: per input chunk, the tile's core points, then the buffer points read
    from the eight neighbours' parts.

    Every dimension of ``dtypes`` (by default: any the folders have; a job passes those of all its folders, see
    :func:`part_dtypes`) is kept; points of inputs without it get zeros, with a :class:`CimWarning` naming the
    dimension and the inputs that lack it (e.g. RGB when mixing colourless ALS with coloured MLS).
    """
    parts_dirs = [Path(folder) for folder in parts_dirs]
    dtypes = dict(dtypes if dtypes is not None else part_dtypes(parts_dirs))
    pieces = [(folder, piece) for folder in parts_dirs if (piece := _load_buffered(folder, tile))]
    if not pieces:
        return PointCloud.empty(crs, names=["core"])
    dtypes["core"] = np.dtype("?")
    for folder, piece in pieces:
        missing = [name for name in dtypes if name not in piece]
        if missing:
            warnings.warn(f"{_source_name(folder)} has no {', '.join(missing)}: its points get 0 there", CimWarning,
                          stacklevel=2)
    return PointCloud(_concat_columns([piece for _, piece in pieces], dtypes), crs)


def _source_name(folder: Path) -> str:
    """The input file a part folder holds (for messages)."""
    return json.loads((folder / "schema.json").read_text()).get("source", folder.name)


def _load_buffered(folder: Path, tile: Tile) -> dict[str, np.ndarray]:
    """One input's points of ``tile`` with a ``core`` flag, ordered per chunk: core points, then buffer points
    direction by direction (the order a single pass over the input gives); {} when it has none."""
    per_chunk: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = {}  # chunk -> (direction rank, columns)
    own = folder / f"{tile.key}.cols"
    for meta, columns in read_frames(own) if own.is_file() else ():
        per_chunk.setdefault(meta["chunk"], []).append((0, {**columns, "core": np.ones(len(columns["x"]), bool)}))
    for rank, (dx, dy) in enumerate(_DIRECTIONS if tile.buffer > 0 else [], start=1):  # no buffer: no neighbours
        part = folder / f"{tile.ix - dx}_{tile.iy - dy}.cols"
        for meta, columns in read_frames(part) if part.is_file() else ():
            fx = columns["x"] - (tile.ix - dx) * tile.size
            fy = columns["y"] - (tile.iy - dy) * tile.size
            keep = _near(fx, dx, tile.size, tile.buffer) & _near(fy, dy, tile.size, tile.buffer)
            if keep.any():
                piece = {**{n: v[keep] for n, v in columns.items()}, "core": np.zeros(int(keep.sum()), bool)}
                per_chunk.setdefault(meta["chunk"], []).append((rank, piece))
    ordered = [piece for c in sorted(per_chunk) for _, piece in sorted(per_chunk[c], key=lambda item: item[0])]
    if len(ordered) <= 1:
        return ordered[0] if ordered else {}
    return _concat_columns(ordered, {n: v.dtype for n, v in ordered[0].items()})


def _concat_columns(pieces: list[dict[str, np.ndarray]], dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """The pieces' columns joined, zeros where a piece lacks one; each piece's column is dropped once joined, so
    that the pieces and the whole are never both held (the peak is the whole plus one column of pieces)."""
    sizes = [len(p["x"]) for p in pieces]
    joined = {}
    for name, dtype in dtypes.items():
        columns = [p.pop(name) if name in p else np.zeros(n, dtype) for p, n in zip(pieces, sizes)]
        joined[name] = columns[0] if len(columns) == 1 else np.concatenate(columns)
    return joined

