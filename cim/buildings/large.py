"""Buildings larger than the tile buffer: found from the footprints and the tile grid, their points gathered from
every tile they touch, modelled once all tiles are done.

A tile's chain sees its core square plus the buffer; a footprint reaching further than the buffer beyond the tile
that owns it (its representative point's) would be modelled from truncated points. Instead every tile writes its
core points near such a footprint (with the tile's ground mask, which needed the tile's context) into the stage's
scratch folder, and the stage's finish models each such building in its own task from the pieces of all tiles
(:meth:`cim.pipeline.reduction.BlockFinish.finish_block`). Outlines derived from the points are found at run time:
a tile keeps its core points around those it sees cut by its buffered square or larger than their own tile's
(:func:`leaves`), and the regions of all tiles, joined where they overlap (:func:`box_groups`), are modelled
after the tiles. A model is cached under the digest of everything it is made from (:func:`digest`), so that a
resume does not model an unchanged building again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely

from cim.buildings.footprints import Footprint, tile_reach
from cim.buildings.model import BuildingModel
from cim.buildings.run import geometries
from cim.cityjson import write_cityjsonseq
from cim.columns import append_frame, read_frames
from cim.fileutil import atomic_write
from cim.points import PointCloud

#: Column of the gathered points holding the ground mask their tile computed.
GROUND = "cim_ground"

Box = tuple[float, float, float, float]  # minx, miny, maxx, maxy


@dataclass(frozen=True)
class Excess:
    """The footprints reaching beyond the tile buffer: id -> reach beyond the owning tile's square (CRS units)."""

    reach: dict[str, float]
    largest: str  # id of the largest of them (by area)
    extent: tuple[float, float]  # its length and width (sides of its minimum rotated rectangle)

    @property
    def buffer_needed(self) -> float:
        """The tile buffer that would give every building all of its points in its own tile."""
        return max(self.reach.values())

    def message(self, buffer: float, what: str = "footprint(s)") -> str:
        """The one warning of the job."""
        w, h = self.extent
        needed = math.ceil(self.buffer_needed)
        return (f"{len(self.reach)} {what} reach beyond the tile buffer of {buffer:g} m (largest: "
                f"{self.largest}, {w:.1f} x {h:.1f} m; buffer needed: {needed:g} m): each is modelled whole after "
                f"the tiles (in parallel tasks) from the points of every tile it touches (a tile buffer of "
                f"{needed:g} m keeps them in the tile chains)")


def excess(footprints: Sequence[Footprint], size: float, buffer: float) -> Excess | None:
    """The footprints whose extent leaves the buffered square of the tile holding their representative point."""
    reach = {f.id: r for f in footprints if (r := tile_reach(f, size)) > buffer}
    if not reach:
        return None
    largest = max((f for f in footprints if f.id in reach), key=lambda f: (f.polygon.area, f.id))
    corners = np.asarray(shapely.minimum_rotated_rectangle(largest.polygon).exterior.coords)
    sides = sorted(np.hypot(*np.diff(corners[:3], axis=0).T), reverse=True)
    return Excess(reach, largest.id, (float(sides[0]), float(sides[1])))


def context_box(fp: Footprint, margin: float) -> Box:
    """The footprint's bounds grown by ``margin`` (room for the ground points and DTM samples around it)."""
    x0, y0, x1, y1 = fp.polygon.bounds
    return (x0 - margin, y0 - margin, x1 + margin, y1 + margin)


def _in_box(x: np.ndarray, y: np.ndarray, box: Box) -> np.ndarray:
    return (x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])


def save_pieces(path: Path, cloud: PointCloud, ground: np.ndarray, regions: dict[str, Sequence[Box]]) -> int:
    """Write the cloud's core points in each region (a name and its boxes: x, y, z, the classes when present and
    the ground mask) as one frame per region with points; returns the number of frames (no file when 0: an
    earlier run's file is removed)."""
    core = np.asarray(cloud["core"], bool) if cloud.has("core") else np.ones(len(cloud), bool)
    names = [n for n in ("x", "y", "z", "classification") if cloud.has(n)]
    frames = []
    for name, boxes in regions.items():
        rows = np.flatnonzero(core & in_boxes(cloud.x, cloud.y, boxes))
        if len(rows):
            frames.append((name, {**{n: np.asarray(cloud[n])[rows] for n in names}, GROUND: ground[rows]}))
    if not frames:
        path.unlink(missing_ok=True)
        return 0
    with atomic_write(path) as tmp:
        for fid, columns in frames:
            append_frame(tmp, columns, {"id": fid})
    return len(frames)


def in_boxes(x: np.ndarray, y: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Mask of the points in any of ``boxes`` ([minx, maxx) x [miny, maxy))."""
    mask = np.zeros(len(x), bool)
    for box in boxes:
        mask |= _in_box(x, y, box)
    return mask


def leaves(fp: Footprint, bounds: Box, tolerance: float = 1.0) -> bool:
    """Whether the footprint comes within ``tolerance`` of the edge of ``bounds`` or leaves them (a derived outline
    touching the edge of a tile's buffered square was cut there)."""
    x0, y0, x1, y1 = fp.polygon.bounds
    return (x0 < bounds[0] + tolerance or y0 < bounds[1] + tolerance or x1 > bounds[2] - tolerance
            or y1 > bounds[3] - tolerance)


def clip(box: Box, bounds: Box) -> Box | None:
    """The part of ``box`` inside ``bounds`` (None when they do not overlap)."""
    out = (max(box[0], bounds[0]), max(box[1], bounds[1]), min(box[2], bounds[2]), min(box[3], bounds[3]))
    return out if out[0] < out[2] and out[1] < out[3] else None


def box_groups(boxes: Sequence[Box]) -> list[list[int]]:
    """The indices of ``boxes`` in groups of overlapping boxes (connected components), in order."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    polygons = shapely.box(*np.asarray(boxes, dtype=np.float64).T)
    pairs = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    graph = coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(len(boxes),) * 2)
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return list(groups.values())


def gather(files: Sequence[Path], fid: str, crs: pyproj.CRS) -> tuple[PointCloud, np.ndarray] | None:
    """The points the tiles wrote for footprint ``fid`` (in the order of ``files``, those present) and their
    ground mask; None when no tile wrote any."""
    parts = [columns for path in files if path.is_file() for meta, columns in read_frames(path) if meta["id"] == fid]
    if not parts:
        return None
    data = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
    ground = data.pop(GROUND).astype(bool)
    return PointCloud(data, crs), ground


def digest(cloud: PointCloud, ground: np.ndarray, footprints: Sequence[Footprint], dtm: tuple[np.ndarray, Any] | None,
           *settings: Any) -> str:
    """SHA-256 of what a large building's model is made from: its gathered points and ground mask, the footprints
    around it, the DTM window and ``settings`` (JSON-able: options, code hash)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in sorted(cloud.names):
        h.update(name.encode() + b"\0" + np.ascontiguousarray(cloud[name]).tobytes())
    h.update(np.packbits(ground).tobytes())
    for fp in footprints:
        h.update(json.dumps([fp.id, fp.attributes], sort_keys=True, default=str).encode())
        h.update(shapely.to_wkb(fp.polygon))
    if dtm is not None:
        h.update(np.ascontiguousarray(dtm[0]).tobytes() + repr(dtm[1]).encode())
    return h.hexdigest()


def cached_model(folder: Path, fid: str, key: str) -> Path:
    """The cache file of the model of footprint ``fid`` made from inputs with digest ``key``."""
    return folder / f"{hashlib.sha256(fid.encode()).hexdigest()[:16]}-{key[:32]}.city.jsonl"


def store_model(path: Path, models: Sequence[BuildingModel], crs: pyproj.CRS) -> None:
    """Write ``models`` to their cache file ``path``, removing the building's older cache files."""
    write_cityjsonseq(path, geometries(models), crs)
    prefix = path.name.split("-")[0]
    for old in path.parent.glob(f"{prefix}-*.city.jsonl"):
        if old != path:
            old.unlink()
