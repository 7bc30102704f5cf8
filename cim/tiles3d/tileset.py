"""3D Tiles 1.1 tileset JSON: tiles with boxes, errors, transforms and contents, written atomically.

Usable for any content (point clouds, building meshes): build a tree of :class:`Tile` and call
:func:`write_tileset`. Boxes are axis-aligned in the tile's frame (the frame after its own ``transform``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cim.fileutil import write_text_atomic
from cim.tiles3d.glb import column_major

#: Smallest half-size of a box axis (metres): flat content still gets a box viewers can cull.
MIN_HALF_SIZE = 5e-4


def box_from_aabb(lo: np.ndarray, hi: np.ndarray) -> list[float]:
    """3D Tiles ``box`` (centre and three half-axes) of an axis-aligned box."""
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    centre = (lo + hi) / 2.0
    half = np.maximum((hi - lo) / 2.0, MIN_HALF_SIZE)
    return [float(v) for v in (*centre, half[0], 0, 0, 0, half[1], 0, 0, 0, half[2])]


def aabb_of_box(box: list[float], transform: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (in the parent frame when ``transform`` is given) of a 3D Tiles box."""
    c = np.asarray(box[:3], float)
    axes = np.asarray(box[3:], float).reshape(3, 3)
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    corners = c + signs @ axes
    if transform is not None:
        corners = corners @ transform[:3, :3].T + transform[:3, 3]
    return corners.min(axis=0), corners.max(axis=0)


@dataclass
class Tile:
    """One tile: an axis-aligned box ``(lo, hi)`` in its frame, its geometric error, content and children."""

    lo: np.ndarray
    hi: np.ndarray
    geometric_error: float
    content_uri: str | None = None
    children: list["Tile"] = field(default_factory=list)
    refine: str | None = None
    transform: np.ndarray | None = None
    extras: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "boundingVolume": {"box": box_from_aabb(self.lo, self.hi)},
            "geometricError": float(self.geometric_error),
        }
        if self.refine:
            out["refine"] = self.refine
        if self.transform is not None:
            out["transform"] = column_major(self.transform)
        if self.content_uri:
            out["content"] = {"uri": self.content_uri}
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        if self.extras:
            out["extras"] = self.extras
        return out


def tileset_json(
    root: Tile,
    geometric_error: float,
    *,
    schema: dict | None = None,
    statistics: dict | None = None,
    metadata: dict | None = None,
    extras: dict | None = None,
) -> dict[str, Any]:
    """The tileset document (3D Tiles 1.1). ``root.refine`` defaults to ADD (required at the root)."""
    if root.refine is None:
        root.refine = "ADD"
    doc: dict[str, Any] = {"asset": {"version": "1.1"}, "geometricError": float(geometric_error)}
    if schema:
        doc["schema"] = schema
    if statistics:
        doc["statistics"] = statistics
    if metadata:
        doc["metadata"] = metadata
    if extras:
        doc["extras"] = extras
    doc["root"] = root.to_json()
    return doc


def write_tileset(path: str | Path, root: Tile, geometric_error: float, **kwargs: Any) -> dict[str, Any]:
    """Write ``tileset.json`` atomically (deterministic: sorted keys); returns the document."""
    doc = tileset_json(root, geometric_error, **kwargs)
    write_text_atomic(path, json.dumps(doc, sort_keys=True, separators=(",", ":")))
    return doc
