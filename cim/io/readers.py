"""What the planner needs from any point reader: one protocol that LAS, PLY and E57 sources implement.

A reader stage (``read.las``, ``read.ply``, ``read.e57``: :mod:`cim.stages.io`) opens each input file as a
:class:`PointSource`. The planner takes the job's CRS, the tile grid's extent and the catalog's date from the
sources, and the partitioning streams each source's :meth:`PointSource.chunks` into tiles, so memory stays bounded
by the chunk size whatever the format.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyproj

from cim import crs as crs_mod
from cim.errors import InputError
from cim.points import Bounds, PointCloud


class PointSource(Protocol):
    """An opened input file: its facts (from the header where the format has one) and its points in chunks."""

    path: Path
    #: The CRS the points carry (the reader's ``crs`` option overrides the file's); None when unknown.
    crs: pyproj.CRS | None

    @property
    def point_count(self) -> int:
        """Number of points the file holds."""
        ...

    @property
    def bounds(self) -> Bounds:
        """Bounds of the points (from the header where the format has one)."""
        ...

    @property
    def acquired(self) -> datetime.date | None:
        """Date the data was captured or created, when the file states it."""
        ...

    @property
    def seekable(self) -> bool:
        """Whether :meth:`chunks` can read a range of points (``points=range(start, stop)``) at the cost of that
        range alone, so that separate tasks can partition one large file (:mod:`cim.io.chunks`)."""
        ...

    def chunks(self, chunk_size: int, bounds: Bounds | None = None) -> Iterator[PointCloud]:
        """The points as clouds of at most ``chunk_size`` points (only those inside ``bounds`` when given).
        Seekable sources also take ``points``: only the points of that index range, chunks counted from its
        start."""
        ...


def require_crs(source: PointSource) -> pyproj.CRS:
    """The source's CRS, or a clear error asking for one."""
    if source.crs is None:
        raise InputError(
            source.path, "the file declares no CRS; give one with --crs (job key 'crs'), e.g. EPSG:7415"
        )
    return source.crs


def inside(cloud: PointCloud, b: Bounds) -> np.ndarray:
    """Mask of the points inside ``b`` (edges included)."""
    x, y, z = cloud.x, cloud.y, cloud.z
    return (x >= b.minx) & (x <= b.maxx) & (y >= b.miny) & (y <= b.maxy) & (z >= b.minz) & (z <= b.maxz)


def scaled_to_u16(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values in [low, high] as 16-bit integers in [0, 65535] (LAS's convention for intensity and colour)."""
    span = high - low
    if not span > 0:
        return np.zeros(len(values), dtype="u2")
    scaled = (np.asarray(values, dtype="f8") - low) * (65535.0 / span)
    return np.clip(np.rint(scaled), 0, 65535).astype("u2")


@dataclass(frozen=True)
class Reprojected:
    """A source's points in another CRS (a :class:`PointSource` too): every chunk is transformed by the exact
    transformation of :func:`cim.crs.exact_transformer` for the source's area, heights included."""

    source: PointSource
    crs: pyproj.CRS

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def point_count(self) -> int:
        return self.source.point_count

    @property
    def acquired(self) -> datetime.date | None:
        return self.source.acquired

    @property
    def transformer(self) -> pyproj.Transformer:
        return crs_mod.exact_transformer(require_crs(self.source), self.crs, self.source.bounds)

    @property
    def bounds(self) -> Bounds:
        """The source's bounds transformed (edges densified, so the box holds every transformed point)."""
        b = self.source.bounds
        minx, miny, maxx, maxy = self.transformer.transform_bounds(b.minx, b.miny, b.maxx, b.maxy, densify_pts=21)
        corners = np.array([[x, y, z] for x in (b.minx, b.maxx) for y in (b.miny, b.maxy) for z in (b.minz, b.maxz)])
        z = crs_mod.transform_points(self.transformer, corners[:, 0], corners[:, 1], corners[:, 2])[2]
        return Bounds(minx, miny, float(z.min()), maxx, maxy, float(z.max()))

    @property
    def seekable(self) -> bool:
        return self.source.seekable

    def chunks(self, chunk_size: int, bounds: Bounds | None = None,
               points: range | None = None) -> Iterator[PointCloud]:
        """Transformed chunks (of the range ``points`` of a seekable source); a ``bounds`` query (in this CRS)
        reaches the source as the box around it in the source's CRS (so COPC still reads only the nodes it needs),
        then selects exactly."""
        transformer = self.transformer
        query = None
        if bounds is not None:
            minx, miny, maxx, maxy = transformer.transform_bounds(*bounds.xy, densify_pts=21, direction="INVERSE")
            query = Bounds(minx, miny, -math.inf, maxx, maxy, math.inf)
        chunks = self.source.chunks(chunk_size, query) if points is None else \
            self.source.chunks(chunk_size, query, points)  # type: ignore[call-arg] - seekable sources take it
        for chunk in chunks:
            x, y, z = crs_mod.transform_points(transformer, chunk.x, chunk.y, chunk.z)
            data = {name: chunk[name] for name in chunk.names}
            data.update(x=x, y=y, z=z)
            cloud = PointCloud(data, self.crs)
            yield cloud if bounds is None else cloud[inside(cloud, bounds)]


def in_crs(source: PointSource, crs: pyproj.CRS) -> PointSource:
    """``source`` with its points in ``crs`` (itself when it already is; see :class:`Reprojected`)."""
    return source if require_crs(source).equals(crs, ignore_axis_order=True) else Reprojected(source, crs)
