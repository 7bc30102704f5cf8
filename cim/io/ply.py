"""PLY point clouds (ASCII or binary), read with plyfile: the ``vertex`` element's properties become dimensions.

``x``/``y``/``z`` become float64; ``red``/``green``/``blue`` of 8 bits are scaled to 16 bits (LAS's convention,
x 257); ``intensity`` (or CloudCompare's ``scalar_intensity``) becomes uint16. Every other scalar property is kept
under its name (lower case, a ``scalar_`` prefix dropped) with its type. Binary files are memory-mapped, so chunks
are read without loading the file.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim import crs as crs_mod
from cim.errors import InputError
from cim.io.readers import inside
from cim.points import STANDARD_DTYPES, Bounds, PointCloud

_COLOURS = ("red", "green", "blue")


@dataclass
class PlySource:
    """An opened PLY file (see :class:`cim.io.readers.PointSource`)."""

    path: Path
    crs: pyproj.CRS | None
    vertices: Any = field(repr=False)  # the structured (memory-mapped) array of the vertex element

    @property
    def point_count(self) -> int:
        return len(self.vertices)

    @property
    def acquired(self) -> datetime.date | None:
        return None  # PLY has no date field

    @property
    def bounds(self) -> Bounds:
        """Bounds of the points (PLY has no header bounds: one pass over the coordinates, chunk by chunk)."""
        lows, highs = [math.inf] * 3, [-math.inf] * 3
        for start in range(0, self.point_count, 1_000_000):
            part = self.vertices[start:start + 1_000_000]
            for i, axis in enumerate("xyz"):
                lows[i] = min(lows[i], float(part[axis].min()))
                highs[i] = max(highs[i], float(part[axis].max()))
        return Bounds(*lows, *highs)

    @property
    def seekable(self) -> bool:
        """Whether a point range costs only its own points: binary files are memory-mapped (ASCII ones parsed)."""
        return isinstance(self.vertices, np.memmap)

    def chunks(self, chunk_size: int, bounds: Bounds | None = None,
               points: range | None = None) -> Iterator[PointCloud]:
        """The points in chunks (of the index range ``points`` when given), only those inside ``bounds``."""
        points = points if points is not None else range(self.point_count)
        for start in range(points.start, points.stop, chunk_size):
            cloud = _to_cloud(self.vertices[start:min(start + chunk_size, points.stop)], self.crs)
            yield cloud if bounds is None else cloud[inside(cloud, bounds)]


def open_source(path: str | Path, crs: str | pyproj.CRS | None = None) -> PlySource:
    """Open a PLY file's vertex element (memory-mapped when binary); ``crs`` gives the points' CRS (PLY has none)."""
    from plyfile import PlyData, PlyParseError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        ply = PlyData.read(str(path), mmap=True)
    except (PlyParseError, ValueError, OSError, IndexError) as exc:
        raise InputError(path, f"not a readable PLY file ({exc})") from None
    if "vertex" not in ply:
        raise InputError(path, "the PLY file has no 'vertex' element")
    vertices = ply["vertex"].data
    missing = [a for a in "xyz" if a not in (vertices.dtype.names or ())]
    if missing:
        raise InputError(path, f"the PLY vertices have no {', '.join(missing)} property")
    scalar = [n for n in vertices.dtype.names if vertices.dtype[n].subdtype is None]
    return PlySource(path, crs_mod.resolve(crs) if crs is not None else None, vertices[scalar])


def _name(prop: str) -> str:
    name = prop.lower()
    return name.removeprefix("scalar_") if name.startswith("scalar_") else name


def _to_cloud(vertices: np.ndarray, crs: pyproj.CRS | None) -> PointCloud:
    data: dict[str, np.ndarray] = {}
    for prop in vertices.dtype.names:
        name, values = _name(prop), np.asarray(vertices[prop])
        target = STANDARD_DTYPES.get(name)
        if name in _COLOURS and values.dtype.itemsize == 1:
            values = values.astype("u2") * np.uint16(257)
        elif target is not None and target.kind in "iu" and values.dtype != target:
            limits = np.iinfo(target)
            values = np.clip(np.rint(values) if values.dtype.kind == "f" else values, limits.min, limits.max)
        data[name] = values.astype(target if target is not None else values.dtype.newbyteorder("="))
    return PointCloud(data, crs)
