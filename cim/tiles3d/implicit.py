"""3D Tiles 1.1 implicit tiling (OCTREE) for a processing tile's LOD octree: subtree files and their reading.

The per-tile octree of :mod:`cim.tiles3d.lod` is a regular octree of a cube in the tile frame, with node names
``level-x-y-z`` and geometric errors that halve per level, which is exactly what implicit tiling describes: the
external tileset of a tile then holds one root with ``implicitTiling`` and a content URI template, and one
``.subtree`` file holds tile and content availability (one subtree spans all levels).

Subtree binary layout: magic ``subt``, version 1, JSON and binary byte lengths (uint64), the JSON padded to
8 bytes with spaces, then the binary chunk; availability bitstreams are LSB-first, level by level, in Morton
order within a level.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from cim.tiles3d.lod import morton

SUBTREE_MAGIC = 0x74627573  # "subt"
CONTENT_TEMPLATE = "{level}-{x}-{y}-{z}.glb"
SUBTREE_TEMPLATE = "{level}-{x}-{y}-{z}.subtree"


def _level_offset(level: int) -> int:
    return ((1 << (3 * level)) - 1) // 7  # nodes in the levels above: (8**level - 1) / 7


def _bit_index(level: int, x: int, y: int, z: int) -> int:
    code = int(morton(np.array([[x, y, z]], np.uint32))[0])
    return _level_offset(level) + code


def subtree_bytes(levels: int, tiles: list[tuple[int, int, int, int]],
                  contents: list[tuple[int, int, int, int]]) -> bytes:
    """A subtree file spanning ``levels`` levels from the root; ``tiles``/``contents``: available (l, x, y, z)."""
    n = _level_offset(levels)
    buffers: list[bytes] = []
    views: list[dict[str, int]] = []
    offset = 0

    def availability(nodes: list[tuple[int, int, int, int]]) -> dict[str, int]:
        nonlocal offset
        if len(nodes) == n:
            return {"constant": 1}
        if not nodes:
            return {"constant": 0}
        bits = np.zeros(n, np.uint8)
        bits[[_bit_index(*node) for node in nodes]] = 1
        data = np.packbits(bits, bitorder="little").tobytes()
        data += b"\0" * ((-len(data)) % 8)
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": (n + 7) // 8})
        buffers.append(data)
        offset += len(data)
        return {"bitstream": len(views) - 1, "availableCount": len(nodes)}

    doc: dict[str, Any] = {"tileAvailability": availability(tiles),
                           "contentAvailability": [availability(contents)],
                           "childSubtreeAvailability": {"constant": 0}}
    binary = b"".join(buffers)
    if binary:
        doc["buffers"] = [{"byteLength": len(binary)}]
        doc["bufferViews"] = views
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<IIQQ", SUBTREE_MAGIC, 1, len(text), len(binary)) + text + binary


def read_subtree(data: bytes) -> tuple[dict, bytes]:
    magic, version, jlen, blen = struct.unpack_from("<IIQQ", data, 0)
    if magic != SUBTREE_MAGIC or version != 1:
        raise ValueError("not a 3D Tiles subtree file")
    return json.loads(data[24:24 + jlen]), data[24 + jlen: 24 + jlen + blen]


def _available(spec: dict, doc: dict, binary: bytes, n: int) -> np.ndarray:
    if "constant" in spec:
        return np.full(n, bool(spec["constant"]))
    view = doc["bufferViews"][spec["bitstream"]]
    raw = np.frombuffer(binary, np.uint8, count=view["byteLength"], offset=view.get("byteOffset", 0))
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def expand_implicit(tile: dict, base: Path) -> dict:
    """The explicit tile tree (JSON dicts) an implicit OCTREE root stands for (single-subtree tilesets)."""
    imp = tile["implicitTiling"]
    if imp["subdivisionScheme"] != "OCTREE":
        raise ValueError("only OCTREE implicit tiling is expanded")
    levels = int(imp["availableLevels"])
    doc, binary = read_subtree((base / imp["subtrees"]["uri"].format(level=0, x=0, y=0, z=0)).read_bytes())
    n = _level_offset(levels)
    tiles_ok = _available(doc["tileAvailability"], doc, binary, n)
    content_ok = _available(doc["contentAvailability"][0], doc, binary, n)
    box = np.asarray(tile["boundingVolume"]["box"], float)
    centre, axes = box[:3], box[3:].reshape(3, 3)
    lo = centre - axes.sum(axis=0)
    template = tile.get("content", {}).get("uri")

    def node(level: int, x: int, y: int, z: int) -> dict:
        size = 2.0 * axes / (1 << level)  # rows: full edge vectors at this level
        corner = lo + x * size[0] + y * size[1] + z * size[2]
        out: dict[str, Any] = {
            "boundingVolume": {"box": [*(corner + size.sum(axis=0) / 2), *(size / 2).ravel()]},
            "geometricError": tile["geometricError"] / (1 << level),
        }
        index = _bit_index(level, x, y, z)
        if template and content_ok[index]:
            out["content"] = {"uri": template.format(level=level, x=x, y=y, z=z)}
        if level + 1 < levels:
            kids = [(2 * x + dx, 2 * y + dy, 2 * z + dz) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]
            out["children"] = [node(level + 1, *k) for k in kids if tiles_ok[_bit_index(level + 1, *k)]]
        return out

    root = node(0, 0, 0, 0)
    root["refine"] = tile.get("refine", "ADD")
    if "transform" in tile:
        root["transform"] = tile["transform"]
    return root
