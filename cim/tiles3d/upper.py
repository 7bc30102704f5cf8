"""The levels of a point-cloud tileset above its processing tiles, built as a tree reduction.

A quadtree over the tiles (:func:`cim.tiles3d.pointcloud.build_tile` left each tile's root candidates in the
work folder), bottom-up and depth-first (memory bounded by the tree depth). Each upper node takes one point per
voxel of its spacing from its children's candidates, moving them up (so no point is duplicated); tile roots are
written with the points left to them; the root tileset ties the job's local ENU frame to ECEF.

The tree is cut at the nodes :data:`BLOCK_LEVELS` levels above the tiles (blocks of up to 4 x 4 tiles):
:func:`build_block` builds everything below one block's root and saves the block root's candidates, so blocks
run as separate tasks in parallel; :func:`build_upper_levels` then builds only the levels above the block roots
from those records. The products are byte-identical to building the whole tree at once (which is what it does
without block records).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim.errors import ConfigError
from cim.fileutil import atomic_write, write_bytes_atomic, write_text_atomic
from cim.tiles3d.glb import apply_affine, points_glb
from cim.tiles3d.implicit import CONTENT_TEMPLATE, SUBTREE_TEMPLATE, subtree_bytes
from cim.tiles3d.lod import grid_sample
from cim.tiles3d.placement import LocalFrame
from cim.tiles3d.pointcloud import CLASS_NAME, TilesOptions, encode_properties, node_error
from cim.tiles3d.tileset import Tile, aabb_of_box, box_from_aabb, write_tileset

#: A block is the quadtree node this many levels above the tiles (2: up to 4 x 4 tiles).
BLOCK_LEVELS = 2

Cell = tuple[int, int]


@dataclass
class _Pending:
    """A node whose own content is decided once its parent has taken its points."""

    local: np.ndarray  # candidate points in the job frame
    attrs: dict[str, np.ndarray]
    color: np.ndarray | None  # linear 16-bit rows (n,4)
    lo: np.ndarray  # AABB of the subtree in the job frame
    hi: np.ndarray
    error: float
    spacing: float
    finalize: Callable[[np.ndarray], Tile | None]  # mask of the candidates that stay -> the node's tile (None: empty)
    children: list[Tile] = field(default_factory=list)  # an upper node's finished children


def _take(attrs: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in attrs.items()}


def _concat(parts: list[_Pending]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    local = np.concatenate([p.local for p in parts])
    attrs = {k: np.concatenate([p.attrs[k] for p in parts]) for k in parts[0].attrs}
    color = None if parts[0].color is None else np.concatenate([p.color for p in parts])
    return local, attrs, color


def _tile_record(tile: Tile) -> dict[str, Any]:
    """``tile`` (and its subtree) as exact JSON (floats round-trip through ``repr``)."""
    return {"lo": tile.lo.tolist(), "hi": tile.hi.tolist(), "error": tile.geometric_error, "uri": tile.content_uri,
            "refine": tile.refine, "transform": None if tile.transform is None else tile.transform.tolist(),
            "children": [_tile_record(c) for c in tile.children]}


def _tile_from_record(record: dict[str, Any]) -> Tile:
    transform = record["transform"]
    return Tile(np.asarray(record["lo"], float), np.asarray(record["hi"], float), record["error"], record["uri"],
                [_tile_from_record(c) for c in record["children"]], refine=record["refine"],
                transform=None if transform is None else np.asarray(transform, float))


def block_name(cell: Cell) -> str:
    """Name of the block of quadtree cell ``cell`` (at :data:`BLOCK_LEVELS` above the tiles)."""
    return f"{BLOCK_LEVELS}_{cell[0]}_{cell[1]}"


def block_of(tile_key: str) -> str:
    """The block a processing tile (key ``ix_iy``) belongs to."""
    ix, iy = (int(v) for v in tile_key.split("_"))
    return block_name((ix >> BLOCK_LEVELS, iy >> BLOCK_LEVELS))


def _with_points(tiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((t for t in tiles if t.get("points")), key=lambda t: t["key"])


def job_summary(tiles: list[dict[str, Any]]) -> dict[str, Any]:
    """What every block needs to know of all tiles: the origin of the job's frame and the tile whose point
    schema the contents use (JSON; floats round-trip exactly)."""
    tiles = _with_points(tiles)
    if not tiles:
        raise ConfigError("tiles.pointcloud", "no points to tile")
    origins = np.array([t["origin"] for t in tiles])
    origin = [float((origins[:, 0].min() + origins[:, 0].max()) / 2.0),
              float((origins[:, 1].min() + origins[:, 1].max()) / 2.0),
              float(np.round(np.median(origins[:, 2])))]
    return {"origin": origin, "schema_tile": tiles[0]["key"]}


class UpperLevels:
    """The quadtree above the tiles with points (``stats`` of :func:`build_tile`), in the job's local frame
    (``summary``: :func:`job_summary` of all tiles when ``tiles`` are one block's)."""

    def __init__(self, tiles: list[dict[str, Any]], crs: pyproj.CRS, tile_size: float, out_dir: Path,
                 work_dir: Path, options: TilesOptions, summary: dict[str, Any] | None = None) -> None:
        self.tiles = _with_points(tiles)
        summary = summary or job_summary(self.tiles)
        self.crs, self.out_dir, self.work_dir, self.options = crs, out_dir, work_dir, options
        self.job = LocalFrame.from_crs(crs, tuple(summary["origin"]), allow_ballpark=options.allow_ballpark)
        self.by_cell: dict[Cell, dict[str, Any]] = {}
        for t in self.tiles:
            ix, iy = (int(v) for v in t["key"].split("_"))
            self.by_cell[(ix, iy)] = t
        self.schema_point = json.loads((work_dir / f"{summary['schema_tile']}.json").read_text())["schema"]
        self.g = 2 ** options.grid_bits
        self.tile_metres = tile_size * _metres_per_unit(crs)  # spacings live in the metric ENU frames
        self.occupied = [set(self.by_cell)]  # cells with points per level (for a block: its own)
        while len(self.occupied) < 2 or len(self.occupied[-1]) > 1:
            self.occupied.append({(ix >> 1, iy >> 1) for ix, iy in self.occupied[-1]})
        self.top = len(self.occupied) - 1
        while len(self.occupied) <= BLOCK_LEVELS:  # a block's own tiles may meet below its root
            self.occupied.append({(ix >> 1, iy >> 1) for ix, iy in self.occupied[-1]})

    def blocks(self) -> list[Cell]:
        """The block cells below the root (none when the whole tree is one block)."""
        return sorted(self.occupied[BLOCK_LEVELS]) if self.top > BLOCK_LEVELS else []

    def _glb(self, local: np.ndarray, color: np.ndarray | None, attrs: dict[str, np.ndarray]) -> bytes:
        return points_glb(local, color=color, properties=encode_properties(attrs), class_name=CLASS_NAME,
                          schema=self.schema_point, meshopt=self.options.meshopt)

    def leaf(self, t: dict[str, Any]) -> _Pending:
        """A tile root: its candidates in the job frame; finalizing writes its points left and external tileset."""
        key, options, work_dir = t["key"], self.options, self.work_dir
        frame = LocalFrame.from_crs(self.crs, t["origin"], allow_ballpark=options.allow_ballpark)
        job_from_tile = self.job.local_from_ecef @ frame.ecef_from_local
        with np.load(work_dir / f"{key}.npz") as z:
            local_t = z["local"]
            attrs = {k[5:]: z[k] for k in z.files if k.startswith("attr_")}
            color = z["color"] if "color" in z.files else None
        lo_t, hi_t = (np.asarray(v, float) for v in t["box"])
        lo, hi = aabb_of_box(box_from_aabb(lo_t, hi_t), job_from_tile)
        implicit = options.implicit
        error = 0.0 if t["leaf"] and not implicit else node_error(t["spacing"], options)
        skeleton = json.loads((work_dir / f"{key}.json").read_text())
        children = skeleton["children"]

        def finalize(keep: np.ndarray) -> Tile | None:
            tdir = self.out_dir / "tiles" / key
            if not keep.any() and len(skeleton["nodes"]) == 1:
                shutil.rmtree(tdir, ignore_errors=True)  # the levels above took every point of this tile
                return None
            uri = None
            if keep.any():
                data = self._glb(local_t[keep], None if color is None else color[keep], _take(attrs, keep))
                uri = CONTENT_TEMPLATE.format(level=0, x=0, y=0, z=0) if implicit else "root.glb"
                write_bytes_atomic(tdir / uri, data)
            root = Tile(lo_t, hi_t, error, uri, refine="ADD")
            doc = root.to_json()
            if implicit:
                nodes = [tuple(v) for v in skeleton["nodes"]]
                contents = nodes[1:] + ([nodes[0]] if uri else [])
                write_bytes_atomic(tdir / SUBTREE_TEMPLATE.format(level=0, x=0, y=0, z=0),
                                   subtree_bytes(skeleton["levels"], nodes, contents))
                doc["content"] = {"uri": CONTENT_TEMPLATE}
                doc["implicitTiling"] = {"subdivisionScheme": "OCTREE", "subtreeLevels": skeleton["levels"],
                                         "availableLevels": skeleton["levels"],
                                         "subtrees": {"uri": SUBTREE_TEMPLATE}}
            elif children:
                doc["children"] = children
            external = {"asset": {"version": "1.1"}, "geometricError": float(error), "root": doc}
            write_text_atomic(tdir / "tileset.json", json.dumps(external, sort_keys=True, separators=(",", ":")))
            return Tile(lo_t, hi_t, error, f"tiles/{key}/tileset.json", transform=job_from_tile)

        return _Pending(apply_affine(job_from_tile, local_t), attrs, color, lo, hi, error, t["spacing"], finalize)

    def _finalizer(self, name: str, local: np.ndarray, attrs: dict[str, np.ndarray], color: np.ndarray | None,
                   lo: np.ndarray, hi: np.ndarray, error: float,
                   children: list[Tile]) -> Callable[[np.ndarray], Tile | None]:
        """How upper node ``name`` is finished once its parent has taken the candidates outside ``keep``."""

        def finalize(keep: np.ndarray) -> Tile | None:
            if not keep.any() and not children:
                return None
            uri = None
            if keep.any():
                data = self._glb(local[keep], None if color is None else color[keep], _take(attrs, keep))
                write_bytes_atomic(self.out_dir / "upper" / f"{name}.glb", data)
                uri = f"upper/{name}.glb"
            return Tile(lo, hi, error, uri, children, refine="ADD")

        return finalize

    def node(self, level: int, cx: int, cy: int, blocks: dict[Cell, _Pending] | None = None) -> _Pending:
        """Upper node ``level_cx_cy`` with every node below it finished (``blocks``: block roots built before)."""
        if level == 0:
            return self.leaf(self.by_cell[(cx, cy)])
        if blocks and level == BLOCK_LEVELS:
            return blocks[(cx, cy)]
        kids = [self.node(level - 1, 2 * cx + dx, 2 * cy + dy, blocks) for dy in (0, 1) for dx in (0, 1)
                if (2 * cx + dx, 2 * cy + dy) in self.occupied[level - 1]]
        local, attrs, color = _concat(kids)
        spacing = max(self.tile_metres * 2**level / self.g, 2.0 * max(k.spacing for k in kids))
        error = max(node_error(spacing, self.options), 2.0 * max(k.error for k in kids))
        picks = grid_sample(local, np.zeros(3), spacing)
        taken = np.zeros(len(local), bool)
        taken[picks] = True
        child_tiles, start = [], 0
        for k in kids:
            stop = start + len(k.local)
            child = k.finalize(~taken[start:stop])
            if child is not None:
                child_tiles.append(child)
            start = stop
        lo = np.min([k.lo for k in kids], axis=0)
        hi = np.max([k.hi for k in kids], axis=0)
        own_local, own_attrs = local[picks], _take(attrs, picks)
        own_color = None if color is None else color[picks]
        finalize = self._finalizer(f"{level}_{cx}_{cy}", own_local, own_attrs, own_color, lo, hi, error, child_tiles)
        return _Pending(own_local, own_attrs, own_color, lo, hi, error, spacing, finalize, child_tiles)

    def _block_path(self, cell: Cell) -> Path:
        return self.work_dir / f"block-{block_name(cell)}.npz"

    def build_block(self, cell: Cell) -> dict[str, Any]:
        """Finish every node below block root ``cell`` and save the root's candidates; returns its record."""
        pending = self.node(BLOCK_LEVELS, *cell)
        arrays = {"local": pending.local, **{f"attr_{k}": v for k, v in pending.attrs.items()}}
        if pending.color is not None:
            arrays["color"] = pending.color
        with atomic_write(self._block_path(cell)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return {"cell": list(cell), "lo": pending.lo.tolist(), "hi": pending.hi.tolist(), "error": pending.error,
                "spacing": pending.spacing, "children": [_tile_record(c) for c in pending.children]}

    def load_block(self, record: dict[str, Any]) -> _Pending:
        """The block root :meth:`build_block` saved, ready for the levels above."""
        cell: Cell = (int(record["cell"][0]), int(record["cell"][1]))
        with np.load(self._block_path(cell)) as z:
            local = z["local"]
            attrs = {k[5:]: z[k] for k in z.files if k.startswith("attr_")}
            color = z["color"] if "color" in z.files else None
        lo, hi = np.asarray(record["lo"], float), np.asarray(record["hi"], float)
        children = [_tile_from_record(c) for c in record["children"]]
        finalize = self._finalizer(block_name(cell), local, attrs, color, lo, hi, record["error"], children)
        return _Pending(local, attrs, color, lo, hi, record["error"], record["spacing"], finalize, children)


def build_block(tiles: list[dict[str, Any]], summary: dict[str, Any], crs: pyproj.CRS, tile_size: float,
                out_dir: Path, work_dir: Path, options: TilesOptions, block: str) -> dict[str, Any] | None:
    """One block's part of the levels above the tiles (``tiles``: the block's stats; ``summary``:
    :func:`job_summary` of all tiles); None when none of its tiles has points."""
    if not _with_points(tiles):
        return None
    levels = UpperLevels(tiles, crs, tile_size, out_dir, work_dir, options, summary)
    cell = next(c for c in levels.occupied[BLOCK_LEVELS] if block_name(c) == block)
    return levels.build_block(cell)


def build_upper_levels(
    tiles: list[dict[str, Any]],
    crs: pyproj.CRS,
    tile_size: float,
    out_dir: Path,
    work_dir: Path,
    options: TilesOptions,
    *,
    dataset: dict[str, Any] | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the levels above the tiles and ``out_dir/tileset.json``; returns the tileset document.

    ``tiles``: the stats :func:`build_tile` returned for every tile; ``blocks``: the records of
    :func:`build_block` for every block with points. Without them, or when the tiles with points lie in one
    block after all, the whole tree is built here (overwriting what blocks wrote; stale contents are removed).
    """
    levels = UpperLevels(tiles, crs, tile_size, out_dir, work_dir, options)
    built = {(int(r["cell"][0]), int(r["cell"][1])): r for r in blocks or []}
    if set(built) != set(levels.blocks()):
        built = {}
    (cx, cy), = levels.occupied[levels.top]
    pending = levels.node(levels.top, cx, cy, {cell: levels.load_block(r) for cell, r in built.items()})
    root = pending.finalize(np.ones(len(pending.local), bool))
    root.transform = levels.job.ecef_from_local
    diagonal = float(np.linalg.norm(root.hi - root.lo))
    schema, statistics, metadata = _tileset_metadata(levels.tiles, levels.schema_point, crs, levels.job,
                                                     dataset or {})
    doc = write_tileset(out_dir / "tileset.json", root, max(diagonal, 2.0 * root.geometric_error),
                        schema=schema, statistics=statistics, metadata=metadata)
    _remove_stale(out_dir, {t["key"] for t in levels.tiles}, _content_uris(doc["root"]))
    return doc


_TILE_DIR = re.compile(r"^-?\d+_-?\d+$")
_UPPER_GLB = re.compile(r"^\d+_-?\d+_-?\d+\.glb$")


def _content_uris(tile: dict[str, Any]) -> set[str]:
    uris = {tile["content"]["uri"]} if "content" in tile else set()
    for child in tile.get("children", []):
        uris |= _content_uris(child)
    return uris


def _remove_stale(out_dir: Path, keys: set[str], uris: set[str]) -> None:
    """Delete tile folders and upper contents an earlier run (other tiles or options) left behind."""
    tiles_dir = out_dir / "tiles"
    if tiles_dir.is_dir():
        for folder in tiles_dir.iterdir():
            if folder.is_dir() and _TILE_DIR.match(folder.name) and folder.name not in keys:
                shutil.rmtree(folder)
    upper_dir = out_dir / "upper"
    if upper_dir.is_dir():
        for glb in upper_dir.iterdir():
            if _UPPER_GLB.match(glb.name) and f"upper/{glb.name}" not in uris:
                glb.unlink()


def _metres_per_unit(crs: pyproj.CRS) -> float:
    from cim.crs import horizontal_part, linear_unit_factor

    if horizontal_part(crs).is_geographic:
        return 111_320.0  # one degree of latitude, near enough for choosing a sampling spacing
    return linear_unit_factor(crs)


def _tileset_metadata(tiles, schema_point, crs, job: LocalFrame, dataset: dict[str, Any]):
    from cim.crs import describe

    count = sum(t["points"] for t in tiles)
    totals: dict[str, list[float]] = {}
    for t in tiles:
        for name, (mn, mx, sm, sq, n) in t["stats"].items():
            if name not in totals:
                totals[name] = [mn, mx, sm, sq, n]
            else:
                acc = totals[name]
                totals[name] = [min(acc[0], mn), max(acc[1], mx), acc[2] + sm, acc[3] + sq, acc[4] + n]
    props = {}
    for name, (mn, mx, sm, sq, n) in sorted(totals.items()):
        mean = sm / n
        var = max(sq / n - mean * mean, 0.0)
        props[name] = {"min": mn, "max": mx, "mean": mean, "variance": var, "standardDeviation": var ** 0.5}
    point_class = schema_point["classes"][CLASS_NAME]
    bits = sorted({t["color_bits"] for t in tiles if t.get("color_bits")})
    schema = {
        "id": "cim_pointcloud",
        "classes": {
            CLASS_NAME: point_class,
            "dataset": {
                "name": "Dataset",
                "properties": {
                    "name": {"type": "STRING", "semantic": "NAME"},
                    "pointCount": {"type": "SCALAR", "componentType": "UINT64"},
                    "sourceCrs": {"type": "STRING", "description": "CRS of the source coordinates"},
                    "originLongitude": {"type": "SCALAR", "componentType": "FLOAT64"},
                    "originLatitude": {"type": "SCALAR", "componentType": "FLOAT64"},
                    "originHeight": {"type": "SCALAR", "componentType": "FLOAT64",
                                     "description": "ellipsoidal height (m) of the local frame origin"},
                    "colorBits": {"type": "SCALAR", "componentType": "UINT8", "required": False},
                },
            },
        },
    }
    lon, lat, h = job.origin_geodetic
    meta_props: dict[str, Any] = {"name": dataset.get("name", "point cloud"), "pointCount": count,
                                  "sourceCrs": describe(crs), "originLongitude": lon, "originLatitude": lat,
                                  "originHeight": h}
    if bits:
        meta_props["colorBits"] = bits[-1]
    metadata = {"class": "dataset", "properties": meta_props}
    statistics = {"classes": {CLASS_NAME: {"count": count, "properties": props}}}
    return schema, statistics, metadata
