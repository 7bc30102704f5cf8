"""COPC (Cloud-Optimized Point Cloud 1.0) writing, built tile by tile.

A COPC file is a LAS 1.4 LAZ file (point format 6, 7 or 8) whose points are grouped into the nodes of an octree,
each node one LAZ chunk, with a ``copc info`` VLR first and the node hierarchy in an EVLR.

The octree is laid on a lattice of cubes whose edge is the tile size (``Layout.cube``), so every tile owns whole
cubes and builds their subtrees alone (:func:`build_tile`): a node keeps a grid subsample of its points (one point
per occupied cell of ``grid``³ cells, at most ``max_points``) and passes the rest to its eight children, until a
node has at most ``max_points`` points. Tiles compress their deeper nodes' chunks into the work folder and keep the
points of their cube nodes uncompressed. :func:`assemble` then builds the levels above the cubes bottom-up (each
parent takes a grid subsample of its children's points, which leave the children), copies the chunks into the
file and writes the hierarchy: memory stays bounded by a few nodes and no process passes over all points.
"""

from __future__ import annotations

import datetime
import math
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import laspy
import lazrs
import numpy as np
import pyproj

from cim.errors import InputError
from cim.fileutil import atomic_write
from cim.io import las
from cim.points import PointCloud

MEDIA_TYPE = "application/vnd.laszip+copc"
_EVLR_HEADER_SIZE = 60
_ENTRY = struct.Struct("<4iQii")  # hierarchy entry: key (level, x, y, z), offset, byte size, point count

Key = tuple[int, int, int, int]


@dataclass(frozen=True)
class Layout:
    """What every tile of one COPC file must agree on."""

    scale: float  # coordinate resolution
    offset: tuple[float, float, float]  # LAS offsets (the block's origin)
    cube: float  # edge of the lattice cubes (the tile size)
    grid: int = 128  # sampling cells per node edge
    max_points: int = 100_000  # points per node at most (a node with more passes the rest to its children)


# octree ----------------------------------------------------------------------------------------------------------
def grid_pick(xyz: np.ndarray, lo: np.ndarray, edge: float, grid: int, cap: int) -> np.ndarray:
    """Sorted indices of a spatially even subsample: the first point of every occupied cell of a ``grid``³
    lattice over the cube (``lo``, ``edge``); at most ``cap`` of them, taken evenly in cell order."""
    cells = np.clip(np.floor((xyz - lo) * (grid / edge)).astype(np.int64), 0, grid - 1)
    ids = (cells[:, 0] * grid + cells[:, 1]) * grid + cells[:, 2]
    _, first = np.unique(ids, return_index=True)
    if len(first) > cap:
        first = first[np.linspace(0, len(first) - 1, cap).astype(np.int64)]
    return np.sort(first)


def _octant(xyz: np.ndarray, lo: np.ndarray, half: float) -> np.ndarray:
    """Child index 0-7 (x bit 1, y bit 2, z bit 4) of each point in the cube at ``lo`` with edge 2 * ``half``."""
    upper = xyz >= lo + half
    return upper[:, 0] * 1 + upper[:, 1] * 2 + upper[:, 2] * 4


def split_cube(xyz: np.ndarray, lo: np.ndarray, edge: float, layout: Layout) -> Iterator[tuple[Key, np.ndarray]]:
    """(key relative to the cube, sorted point indices) of every node of the subtree over one cube."""
    min_edge = layout.scale * layout.grid  # below this a node cannot spread its points any finer
    stack: list[tuple[Key, np.ndarray]] = [((0, 0, 0, 0), np.arange(len(xyz)))]
    while stack:
        key, idx = stack.pop()
        depth, i, j, k = key
        e = edge / 2**depth
        node_lo = lo + np.array([i, j, k]) * e
        if len(idx) <= layout.max_points or e <= min_edge:
            yield key, idx
            continue
        picked = grid_pick(xyz[idx], node_lo, e, layout.grid, layout.max_points)
        yield key, idx[picked]
        rest = np.delete(idx, picked)
        octant = _octant(xyz[rest], node_lo, e / 2)
        for o in range(7, -1, -1):
            child = rest[octant == o]
            if len(child):
                stack.append(((depth + 1, 2 * i + (o & 1), 2 * j + (o >> 1 & 1), 2 * k + (o >> 2 & 1)), child))


# encoding --------------------------------------------------------------------------------------------------------
def _laz_vlr(point_format: laspy.PointFormat) -> lazrs.LazVlr:
    return lazrs.LazVlr.new_for_compression(point_format.id, point_format.num_extra_bytes, True)


def compress_chunk(points: np.ndarray, vlr: lazrs.LazVlr) -> bytes:
    """One LAZ chunk holding the (structured) point array ``points``."""
    data = bytes(lazrs.compress_points(vlr, np.frombuffer(points.tobytes(), np.uint8), False))
    table_at = int.from_bytes(data[:8], "little")  # compress_points writes: offset to the table, chunk, table
    return data[8:table_at]


def _xyz(points: np.ndarray, layout: Layout) -> np.ndarray:
    ints = np.column_stack([points["X"], points["Y"], points["Z"]]).astype("f8")
    return ints * layout.scale + np.asarray(layout.offset)


# per tile --------------------------------------------------------------------------------------------------------
def build_tile(cloud: PointCloud, layout: Layout, work: Path, creation_date: datetime.date,
               adjusted_gps_time: bool | None = None) -> dict[str, Any]:
    """Build the subtrees of the cubes holding ``cloud``'s points; write their data under ``work``.
    ``adjusted_gps_time`` as in :func:`cim.io.las.write` (default: from the times).

    Returns the facts :func:`assemble` needs (JSON-able): cubes, chunk index, bounds, counts, point format."""
    if len(cloud) == 0:
        return {"points": 0}
    header, record = las.to_record(cloud, scale=layout.scale, offsets=np.asarray(layout.offset),
                                   creation_date=creation_date, adjusted_gps_time=adjusted_gps_time)
    points = record.array
    xyz = _xyz(points, layout)
    # the cubes of the points as given (as the tiler placed them): a point rounded onto the next tile's edge by the
    # integer grid stays in this tile's cube, which no other tile builds
    cubes = np.floor(cloud.xyz / layout.cube).astype(np.int64)
    order = np.lexsort((cubes[:, 2], cubes[:, 1], cubes[:, 0]))
    starts = np.flatnonzero(np.r_[True, np.any(np.diff(cubes[order], axis=0) != 0, axis=1)])
    vlr = _laz_vlr(header.point_format)
    index: list[dict[str, Any]] = []
    work.mkdir(parents=True, exist_ok=True)
    with atomic_write(work / "chunks.bin") as tmp, open(tmp, "wb") as out:
        for a, b in zip(starts, [*starts[1:], len(order)]):
            members = order[a:b]
            cube = cubes[members[0]]
            name = "_".join(str(int(v)) for v in cube)
            for key, idx in sorted(split_cube(xyz[members], cube * layout.cube, layout.cube, layout)):
                node = points[members[idx]]
                if key == (0, 0, 0, 0):
                    with atomic_write(work / f"{name}.npy") as raw:
                        np.save(raw, node)
                    continue
                chunk = compress_chunk(node, vlr)
                index.append({"cube": cube.tolist(), "key": list(key), "offset": out.tell(), "size": len(chunk),
                              "count": len(node)})
                out.write(chunk)
    returns = np.bincount(np.clip(record["return_number"], 0, 15), minlength=16)[1:16]
    gps = np.asarray(record["gps_time"]) if "gps_time" in record.point_format.dimension_names else np.zeros(1)
    return {
        "points": len(points),
        "cubes": sorted({tuple(c) for c in cubes[order[starts]].tolist()}),
        "chunks": index,
        "mins": xyz.min(axis=0).tolist(),
        "maxs": xyz.max(axis=0).tolist(),
        "returns": returns.tolist(),
        "gps": [float(gps.min()), float(gps.max())],
        "format": header.point_format.id,
        "extras": [[n, str(cloud[n].dtype)] for n in header.point_format.extra_dimension_names],
        "adjusted_gps": header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD,
    }


# the file --------------------------------------------------------------------------------------------------------
def _check_same(tiles: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    first = tiles[0]
    for t in tiles[1:]:
        for fact in ("format", "extras", "adjusted_gps"):
            if t[fact] != first[fact]:
                raise InputError(path, f"tiles differ in {fact} ({first[fact]} vs {t[fact]}); "
                                       "one COPC file needs one point layout")
    return first


def _header(tiles: list[dict[str, Any]], layout: Layout, crs: pyproj.CRS | None,
            creation_date: datetime.date, path: Path) -> laspy.LasHeader:
    first = _check_same(tiles, path)
    cloud = PointCloud.empty(crs, [n for n, _ in first["extras"]])
    for name, dtype in first["extras"]:
        cloud.set(name, np.empty(0, dtype))
    if first["format"] >= 7:
        cloud.set("red", np.empty(0, "u2"))
    if first["format"] == 8:
        cloud.set("nir", np.empty(0, "u2"))
    header, _ = las.to_record(cloud, scale=layout.scale, offsets=np.asarray(layout.offset), crs=crs,
                              creation_date=creation_date)
    if first["adjusted_gps"]:
        header.global_encoding.gps_time_type = laspy.header.GpsTimeType.STANDARD
    header.are_points_compressed = True
    header.point_count = sum(t["points"] for t in tiles)
    header.mins = np.min([t["mins"] for t in tiles], axis=0)
    header.maxs = np.max([t["maxs"] for t in tiles], axis=0)
    header.number_of_points_by_return = np.sum([t["returns"] for t in tiles], axis=0).astype(np.uint64)
    return header


def _info_vlr(center: np.ndarray, halfsize: float, spacing: float, root: tuple[int, int],
              gps: tuple[float, float]) -> laspy.VLR:
    data = struct.pack("<5d2Q2d11Q", *center, halfsize, spacing, *root, *gps, *([0] * 11))
    return laspy.VLR("copc", 1, "copc info", data)


class _Nodes:
    """Uncompressed node points kept in the work folder between levels (one .npy file per node)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: Key) -> Path:
        return self.folder / ("_".join(map(str, key)) + ".npy")

    def load(self, key: Key) -> np.ndarray:
        return np.load(self.path(key))

    def save(self, key: Key, points: np.ndarray) -> None:
        np.save(self.path(key), points)


def assemble(tiles: list[dict[str, Any]], layout: Layout, crs: pyproj.CRS | None, path: Path, work: Path,
             creation_date: datetime.date) -> dict[str, Any]:
    """Write the COPC file ``path`` from the tiles' :func:`build_tile` results, each with the folder it wrote
    to as ``work``; returns the file's facts (points, nodes, levels, bounds)."""
    tiles = [t for t in tiles if t.get("points")]
    if not tiles:
        raise InputError(path, "no points to write")
    header = _header(tiles, layout, crs, creation_date, path)
    vlr = _laz_vlr(header.point_format)
    lattice = np.array([c for t in tiles for c in t["cubes"]], dtype=np.int64)
    low = lattice.min(axis=0)
    depth = max(0, math.ceil(math.log2(int((lattice.max(axis=0) - low).max()) + 1)))
    root_lo = low * layout.cube
    halfsize = layout.cube * 2**depth / 2
    nodes = _Nodes(work / "nodes")
    level: dict[Key, Path] = {}  # nodes of the current depth whose points may still change -> where they are
    for t in tiles:
        for cube in t["cubes"]:
            rel = np.asarray(cube) - low
            level[(depth, *map(int, rel))] = Path(t["work"]) / ("_".join(map(str, cube)) + ".npy")
    branching = {(depth, *map(int, np.asarray(c["cube"]) - low)) for t in tiles for c in t["chunks"]}
    entries: list[tuple[Key, int, int, int]] = []
    table: list[tuple[int, int]] = []
    gps = (min(t["gps"][0] for t in tiles), max(t["gps"][1] for t in tiles))
    header.vlrs.insert(0, _info_vlr(root_lo + halfsize, halfsize, 2 * halfsize / layout.grid, (0, 0), gps))
    header.vlrs.append(laspy.VLR("laszip encoded", 22204, "lazrs variable chunks", vlr.record_data()))
    with atomic_write(path) as tmp, open(tmp, "w+b") as out:
        header.write_to(out)
        data_start = out.tell()
        out.write(b"\0" * 8)  # offset to the LAZ chunk table, filled in below

        def emit(key: Key, points: np.ndarray) -> None:
            """Compress a node's points into the file; an emptied node stays only when it has children."""
            if len(points):
                chunk = compress_chunk(points, vlr)
                entries.append((key, out.tell(), len(chunk), len(points)))
                table.append((len(points), len(chunk)))
                out.write(chunk)
            elif key in branching:
                entries.append((key, 0, 0, 0))

        for t in tiles:  # the tiles' deeper nodes: copy their chunks
            shift = {tuple(c): (np.asarray(c) - low) for c in t["cubes"]}
            with open(Path(t["work"]) / "chunks.bin", "rb") as src:
                for c in t["chunks"]:
                    d, i, j, k = c["key"]
                    rel = shift[tuple(c["cube"])] * 2**d
                    src.seek(c["offset"])
                    chunk = src.read(c["size"])
                    entries.append(((depth + d, int(rel[0] + i), int(rel[1] + j), int(rel[2] + k)), out.tell(),
                                    c["size"], c["count"]))
                    table.append((c["count"], c["size"]))
                    out.write(chunk)
        for d in range(depth - 1, -1, -1):  # coarser levels: parents take a subsample of their children
            parents: dict[Key, list[Key]] = {}
            for key in sorted(level):
                parents.setdefault((d, key[1] >> 1, key[2] >> 1, key[3] >> 1), []).append(key)
            upper: dict[Key, Path] = {}
            for parent, children in parents.items():
                arrays = [np.load(level[c]) for c in children]
                both = np.concatenate(arrays)
                edge = 2 * halfsize / 2**d
                lo = root_lo + np.array(parent[1:]) * edge
                picked = np.zeros(len(both), bool)
                picked[grid_pick(_xyz(both, layout), lo, edge, layout.grid, layout.max_points)] = True
                bounds = np.cumsum([0, *map(len, arrays)])
                for child, array, a, b in zip(children, arrays, bounds[:-1], bounds[1:]):
                    emit(child, array[~picked[a:b]])
                nodes.save(parent, both[picked])
                branching.add(parent)
                upper[parent] = nodes.path(parent)
            level = upper
        for key, where in sorted(level.items()):  # the root (or the single cube)
            emit(key, np.load(where))
        table_at = out.tell()
        lazrs.write_chunk_table(out, table, vlr)
        evlr_at = out.tell()
        page = b"".join(_ENTRY.pack(*key, offset, size, count) for key, offset, size, count in sorted(entries))
        out.write(struct.pack("<H16sHQ32s", 0, b"copc", 1000, len(page), b"EPT hierarchy"))
        out.write(page)
        header.start_of_first_evlr = evlr_at
        header.number_of_evlrs = 1
        header.vlrs[0] = _info_vlr(root_lo + halfsize, halfsize, 2 * halfsize / layout.grid,
                                   (evlr_at + _EVLR_HEADER_SIZE, len(page)), gps)
        out.seek(0)
        header.write_to(out, ensure_same_size=True)
        out.seek(data_start)
        out.write(struct.pack("<q", table_at))
    return {"points": int(header.point_count), "nodes": len(entries), "levels": max(e[0][0] for e in entries) + 1,
            "bounds": [*header.mins.tolist(), *header.maxs.tolist()]}


def write(path: str | Path, cloud: PointCloud, *, scale: float = 0.001, max_points: int = 100_000, grid: int = 128,
          creation_date: datetime.date | None = None) -> Path:
    """Write one in-memory cloud as a COPC file (its CRS and every dimension); returns the path.

    For pipelines, ``write.copc`` builds the octree tile by tile instead."""
    path = Path(path)
    if len(cloud) == 0:
        raise InputError(path, "no points to write")
    if not np.all(np.isfinite(cloud.xyz)):
        raise InputError(path, "points with NaN or infinite coordinates cannot go into a COPC file")
    mins, maxs = cloud.xyz.min(axis=0), cloud.xyz.max(axis=0)
    extent = float(np.max(maxs - mins))
    cube = 2.0 ** math.ceil(math.log2(max(extent, 1.0)))
    layout = Layout(scale, tuple(float(v) for v in np.floor(mins)), cube, grid, max_points)
    day = creation_date or datetime.date.today()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tile = build_tile(cloud, layout, Path(tmp) / "tile", day)
        assemble([{**tile, "work": str(Path(tmp) / "tile")}], layout, cloud.crs, path, Path(tmp) / "nodes", day)
    return path
