"""Point clouds to 3D Tiles 1.1, tile by tile (bounded memory) and then the levels above the tiles.

1. :func:`build_tile` (one foundation tile, its core points only): local ENU frame at the tile centre, LOD octree
   (:mod:`cim.tiles3d.lod`), one GLB per node below the tile root, an external-tileset skeleton, and the tile
   root's points saved as candidates for the levels above.
2. :func:`build_upper_levels` (once): a quadtree over the tiles, bottom-up and depth-first (memory bounded by the
   tree depth). Each upper node takes one point per voxel of its spacing from its children's candidates, moving
   them up (so no point is duplicated); tile roots are written with the points left to them; the root tileset
   ties the job's local ENU frame to ECEF through the job's compound CRS.

Refinement is ADD everywhere: a child only adds the points its parent does not show, which is what makes the
hierarchy lossless and duplicate-free. Geometric error of a node = ``error_scale`` x the sampling spacing of its
own points (the gap its descendants fill); leaves have 0; parents are always strictly larger than children.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim.errors import ConfigError
from cim.fileutil import atomic_dir, atomic_write, write_bytes_atomic, write_text_atomic
from cim.points import PointCloud
from cim.tiles3d.glb import PointProperty, apply_affine, linear_colors, points_glb
from cim.tiles3d.implicit import CONTENT_TEMPLATE, SUBTREE_TEMPLATE, subtree_bytes
from cim.tiles3d.lod import build_octree, grid_sample
from cim.tiles3d.placement import LocalFrame
from cim.tiles3d.tileset import Tile, aabb_of_box, box_from_aabb, write_tileset

#: Per-point properties written when the cloud has them (plus any ``extra`` names asked for).
DEFAULT_PROPERTIES = ("intensity", "classification", "return_number", "gps_time")
_DIRECT = {np.dtype(t) for t in ("i1", "u1", "i2", "u2", "f4")}
_DESCRIPTIONS = {
    "intensity": "LAS intensity",
    "classification": "ASPRS LAS classification code",
    "return_number": "return number of the pulse",
    "number_of_returns": "number of returns of the pulse",
    "gps_time": "GPS time (s); stored as float32 relative to a float64 offset per content",
    "scan_angle": "scan angle (degrees)",
    "point_source_id": "flight line / source id",
    "user_data": "LAS user data",
}
CLASS_NAME = "point"
#: Stored value of NaN / infinite float properties (the class property's ``noData``): the lowest float32.
NO_DATA = float(np.finfo(np.float32).min)


@dataclass(frozen=True)
class TilesOptions:
    """How the hierarchy is built (the stage's pydantic options map onto this)."""

    leaf_points: int = 60_000
    grid_bits: int = 7
    error_scale: float = 4.0
    color_depth: str = "auto"  # "auto", "8" or "16"
    properties: tuple[str, ...] = DEFAULT_PROPERTIES
    extra: tuple[str, ...] = ()
    allow_ballpark: bool = False
    implicit: bool = False  # per-tile octrees as implicit tiling (subtree files) instead of explicit JSON
    meshopt: bool = False  # compress contents with EXT_meshopt_compression (needs the meshoptimizer package)


# -- properties -----------------------------------------------------------------------------------------------

def property_names(cloud: PointCloud, options: TilesOptions) -> list[str]:
    """The per-point properties written for ``cloud``: the standard ones it has, then the asked-for extras."""
    names = [n for n in options.properties if cloud.has(n)]
    for n in options.extra:
        if not cloud.has(n):
            raise ConfigError("extra", f"the point cloud has no dimension {n!r} (it has {', '.join(cloud.names)})")
        if n not in names:
            names.append(n)
    return names


def property_identifiers(names: list[str]) -> dict[str, str]:
    """Metadata identifiers (``[A-Za-z_][A-Za-z0-9_]*``, unique) for dimension names such as 'Reflectance (dB)'."""
    out: dict[str, str] = {}
    taken: set[str] = set()  # upper-cased: identifiers differing only in case collide too
    for name in names:
        ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not re.match(r"[A-Za-z_]", ident):
            ident = "_" + ident
        base, k = ident, 1
        while ident.upper() in taken:
            k += 1
            ident = f"{base}_{k}"
        out[name] = ident
        taken.add(ident.upper())
    return out


def stored_dtype(dtype: np.dtype) -> np.dtype:
    """Component type a property of ``dtype`` is stored with (vertex attributes allow 8/16-bit ints, float32)."""
    dtype = np.dtype(dtype)
    if dtype in _DIRECT:
        return dtype
    if dtype.kind == "b":
        return np.dtype("u1")
    return np.dtype("f4")


def point_class(dtypes: dict[str, np.dtype]) -> dict[str, Any]:
    """The EXT_structural_metadata / 3D Metadata class of the per-point properties."""
    props = {}
    for name, dtype in dtypes.items():
        sd = stored_dtype(dtype)
        prop = PointProperty(name, np.zeros(0, sd), offset=0.0 if _needs_offset(dtype) else None,
                             description=_DESCRIPTIONS.get(name)).class_property()
        if sd.kind == "f":
            prop["noData"] = NO_DATA  # NaN / infinite source values (glTF accessors must be finite)
        props[name] = prop
    return {"name": "Point", "description": "Per-point attributes of the source point cloud",
            "properties": props}


def _needs_offset(dtype: np.dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype not in _DIRECT and dtype.kind != "b"


def encode_properties(attrs: dict[str, np.ndarray]) -> list[PointProperty]:
    """Property attributes of one content; non-finite floats become the class's ``noData`` value."""
    out = []
    for name, values in attrs.items():
        finite = None if values.dtype.kind != "f" else np.isfinite(values)
        if finite is not None and finite.all():
            finite = None
        if _needs_offset(values.dtype):
            good = values if finite is None else values[finite]
            base = float(good.min()) if len(good) else 0.0
            stored = np.subtract(values, base, out=np.empty(len(values), np.float32), casting="unsafe")
            out.append(PointProperty(name, stored, offset=base))
        else:
            stored = values.astype(stored_dtype(values.dtype), copy=finite is not None)
            out.append(PointProperty(name, stored))
        if finite is not None:
            stored[~finite] = NO_DATA
    return out


RGB = ("red", "green", "blue")


def color_bits(cloud: PointCloud, depth: str) -> int | None:
    """Bit depth of the cloud's RGB (None: no colours); 8-bit values stored in 16-bit fields are detected."""
    if not all(cloud.has(c) for c in RGB):
        return None
    if depth != "auto":
        return int(depth)
    return 8 if max(int(cloud[c].max(initial=0)) for c in RGB) <= 255 else 16


def _stats(attrs: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """[min, max, sum, sum of squares, count] of every property (finite values only)."""
    out = {}
    for name, v in attrs.items():
        if v.dtype.kind == "u" and v.dtype.itemsize <= 2 and len(v):
            counts = np.bincount(v)
            values = np.flatnonzero(counts)
            weights = counts[values].astype(np.float64)
            f = values.astype(np.float64)
            out[name] = [float(f[0]), float(f[-1]), float(np.einsum("i,i->", weights, f)),
                         float(np.einsum("i,i,i->", weights, f, f)), int(len(v))]
            continue
        f = v if v.dtype == np.float64 else v.astype(np.float64)
        if v.dtype.kind == "f" and not np.isfinite(f).all():
            f = f[np.isfinite(f)]
        if len(f):
            # einsum, not np.dot: a BLAS dot wakes OpenBLAS's thread pool, whose spinning threads take CPU from
            # the other Dask worker thread
            out[name] = [float(f.min()), float(f.max()), float(f.sum()), float(np.einsum("i,i->", f, f)), int(len(f))]
    return out


# -- one tile -------------------------------------------------------------------------------------------------

def tile_frame_origin(core_bounds: tuple[float, float, float, float], z: np.ndarray) -> tuple[float, float, float]:
    minx, miny, maxx, maxy = core_bounds
    return ((minx + maxx) / 2.0, (miny + maxy) / 2.0, float(np.round((z.min() + z.max()) / 2.0)))


def node_error(spacing: float, options: TilesOptions) -> float:
    return options.error_scale * spacing


def build_tile(
    cloud: PointCloud,
    key: str,
    core_bounds: tuple[float, float, float, float],
    crs: pyproj.CRS,
    tile_dir: Path,
    work_dir: Path,
    options: TilesOptions,
) -> dict[str, Any]:
    """Write one tile's subtree (all levels below its root) and its root candidates; returns JSON-able stats."""
    if cloud.has("core") and not cloud["core"].all():
        cloud = cloud[cloud["core"]]
    n = len(cloud)
    if n == 0:
        return {"points": 0}
    names = property_names(cloud, options)
    frame = LocalFrame.from_crs(crs, tile_frame_origin(core_bounds, cloud.z), allow_ballpark=options.allow_ballpark)
    tree = build_octree(frame.to_local(cloud.x, cloud.y, cloud.z), leaf_points=options.leaf_points,
                        grid_bits=options.grid_bits)
    order = tree.order  # everything below is gathered once into node order: node i is the slice tree.slice_of(i)
    attrs = {identifier: cloud[name][order] for name, identifier in property_identifiers(names).items()}
    bits = color_bits(cloud, options.color_depth)
    color = None if bits is None else linear_colors([cloud[c][order] for c in RGB], bits)
    schema = {"id": "cim_points", "classes": {CLASS_NAME: point_class({k: v.dtype for k, v in attrs.items()})}}

    def subtree(i: int) -> Tile:
        nd = tree.nodes[i]
        error = 0.0 if not nd.children else node_error(tree.spacing(nd.level), options)
        return Tile(nd.box_min, nd.box_max, error, f"{nd.name}.glb", [subtree(c) for c in nd.children])

    root = tree.nodes[0]
    with atomic_dir(tile_dir) as tmp:
        for i, nd in enumerate(tree.nodes[1:], start=1):
            sl = tree.slice_of(i)
            data = points_glb(tree.points[sl], color=None if color is None else color[sl],
                              properties=encode_properties({k: v[sl] for k, v in attrs.items()}),
                              class_name=CLASS_NAME, schema=schema, bounds=(nd.own_min, nd.own_max),
                              meshopt=options.meshopt)
            (tmp / f"{nd.name}.glb").write_bytes(data)
    children = [subtree(c).to_json() for c in root.children]
    sl = tree.slice_of(0)
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(work_dir / f"{key}.npz") as tmp:
        arrays = {"local": tree.points[sl], **{f"attr_{k}": v[sl] for k, v in attrs.items()}}
        if color is not None:
            arrays["color"] = color[sl]
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    skeleton = {"children": children, "schema": schema,
                "nodes": [[nd.level, *nd.index] for nd in tree.nodes],
                "levels": 1 + max(nd.level for nd in tree.nodes)}
    write_text_atomic(work_dir / f"{key}.json", json.dumps(skeleton, sort_keys=True))
    return {
        "points": int(n),
        "key": key,
        "origin": list(frame.origin),
        "box": ([tree.origin.tolist(), (tree.origin + tree.side).tolist()] if options.implicit
                else [root.box_min.tolist(), root.box_max.tolist()]),
        "spacing": tree.spacing(0),
        "leaf": not root.children,
        "nodes": len(tree.nodes),
        "candidates": int(root.count),
        "color_bits": bits,
        "properties": {k: np.dtype(v.dtype).str for k, v in attrs.items()},
        "stats": _stats(attrs),
        "z_range": [float(cloud.z.min()), float(cloud.z.max())],
        "xy_bounds": [float(cloud.x.min()), float(cloud.y.min()), float(cloud.x.max()), float(cloud.y.max())],
    }


# -- levels above the tiles -----------------------------------------------------------------------------------

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


def _take(attrs: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in attrs.items()}


def _concat(parts: list[_Pending]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    local = np.concatenate([p.local for p in parts])
    attrs = {k: np.concatenate([p.attrs[k] for p in parts]) for k in parts[0].attrs}
    color = None if parts[0].color is None else np.concatenate([p.color for p in parts])
    return local, attrs, color


def build_upper_levels(
    tiles: list[dict[str, Any]],
    crs: pyproj.CRS,
    tile_size: float,
    out_dir: Path,
    work_dir: Path,
    options: TilesOptions,
    *,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the tile roots, the levels above them and ``out_dir/tileset.json``; returns the tileset document.

    ``tiles``: the stats :func:`build_tile` returned for every tile that has points.
    """
    tiles = sorted((t for t in tiles if t.get("points")), key=lambda t: t["key"])
    if not tiles:
        raise ConfigError("tiles.pointcloud", "no points to tile")
    origins = np.array([t["origin"] for t in tiles])
    job_origin = ((origins[:, 0].min() + origins[:, 0].max()) / 2.0,
                  (origins[:, 1].min() + origins[:, 1].max()) / 2.0,
                  float(np.round(np.median(origins[:, 2]))))
    job = LocalFrame.from_crs(crs, job_origin, allow_ballpark=options.allow_ballpark)
    by_cell = {}
    for t in tiles:
        ix, iy = (int(v) for v in t["key"].split("_"))
        by_cell[(ix, iy)] = t
    schema_point = json.loads((work_dir / f"{tiles[0]['key']}.json").read_text())["schema"]
    g = 2 ** options.grid_bits
    tile_metres = tile_size * _metres_per_unit(crs)  # spacings live in the metric ENU frames

    def leaf_tile(t: dict[str, Any]) -> _Pending:
        key = t["key"]
        frame = LocalFrame.from_crs(crs, t["origin"], allow_ballpark=options.allow_ballpark)
        job_from_tile = job.local_from_ecef @ frame.ecef_from_local
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
            tdir = out_dir / "tiles" / key
            if not keep.any() and len(skeleton["nodes"]) == 1:
                shutil.rmtree(tdir, ignore_errors=True)  # the levels above took every point of this tile
                return None
            uri = None
            if keep.any():
                data = points_glb(local_t[keep], color=None if color is None else color[keep],
                                  properties=encode_properties(_take(attrs, keep)), class_name=CLASS_NAME,
                                  schema=schema_point, meshopt=options.meshopt)
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

    def upper(level: int, cx: int, cy: int) -> _Pending:
        if level == 0:
            return leaf_tile(by_cell[(cx, cy)])
        kids = [upper(level - 1, 2 * cx + dx, 2 * cy + dy) for dy in (0, 1) for dx in (0, 1)
                if (2 * cx + dx, 2 * cy + dy) in occupied[level - 1]]
        local, attrs, color = _concat(kids)
        spacing = max(tile_metres * 2**level / g, 2.0 * max(k.spacing for k in kids))
        error = max(node_error(spacing, options), 2.0 * max(k.error for k in kids))
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
        name = f"{level}_{cx}_{cy}"

        def finalize(keep: np.ndarray) -> Tile | None:
            if not keep.any() and not child_tiles:
                return None
            uri = None
            if keep.any():
                data = points_glb(own_local[keep], color=None if own_color is None else own_color[keep],
                                  properties=encode_properties(_take(own_attrs, keep)), class_name=CLASS_NAME,
                                  schema=schema_point, meshopt=options.meshopt)
                write_bytes_atomic(out_dir / "upper" / f"{name}.glb", data)
                uri = f"upper/{name}.glb"
            return Tile(lo, hi, error, uri, child_tiles, refine="ADD")

        return _Pending(own_local, own_attrs, own_color, lo, hi, error, spacing, finalize)

    occupied = [set(by_cell)]
    while len(occupied) < 2 or len(occupied[-1]) > 1:
        occupied.append({(ix >> 1, iy >> 1) for ix, iy in occupied[-1]})
    top = len(occupied) - 1
    (cx, cy), = occupied[top]
    pending = upper(top, cx, cy)
    root = pending.finalize(np.ones(len(pending.local), bool))
    root.transform = job.ecef_from_local
    diagonal = float(np.linalg.norm(root.hi - root.lo))
    schema, statistics, metadata = _tileset_metadata(tiles, schema_point, crs, job, dataset or {})
    doc = write_tileset(out_dir / "tileset.json", root, max(diagonal, 2.0 * root.geometric_error),
                        schema=schema, statistics=statistics, metadata=metadata)
    _remove_stale(out_dir, {t["key"] for t in tiles}, _content_uris(doc["root"]))
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
