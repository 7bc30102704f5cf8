"""Point clouds to 3D Tiles 1.1, tile by tile (bounded memory) and then the levels above the tiles.

1. :func:`build_tile` (one foundation tile, its core points only): local ENU frame at the tile centre, LOD octree
   (:mod:`cim.tiles3d.lod`), one GLB per node below the tile root, an external-tileset skeleton, and the tile
   root's points saved as candidates for the levels above.
2. :mod:`cim.tiles3d.upper` builds the levels above the tiles (a quadtree over them, as a tree reduction over
   blocks of tiles) and the root tileset.

Refinement is ADD everywhere: a child only adds the points its parent does not show, which is what makes the
hierarchy lossless and duplicate-free. Geometric error of a node = ``error_scale`` x the sampling spacing of its
own points (the gap its descendants fill); leaves have 0; parents are always strictly larger than children.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim.errors import ConfigError
from cim.fileutil import atomic_dir, atomic_write, write_text_atomic
from cim.points import PointCloud
from cim.tiles3d.glb import PointProperty, linear_colors, points_glb
from cim.tiles3d.lod import build_octree
from cim.tiles3d.placement import LocalFrame
from cim.tiles3d.tileset import Tile

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
