"""Global, cell-aligned raster grids and per-cell reductions of points.

Every raster cim writes lives on ONE global grid per resolution: cell edges sit on integer multiples of the cell
size (plus an optional origin), so tiles computed separately share cell boundaries and mosaic without seams.
Rows run north to south (row 0 is the top), as in GeoTIFF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

__all__ = ["GridSpec", "cell_reduce", "finite_points"]


@dataclass(frozen=True)
class GridSpec:
    """A north-up grid: ``width`` x ``height`` cells of ``resolution`` metres, top-left corner (xmin, ymax).

    ``xmin`` and ``ymax`` are multiples of ``resolution`` (offset by ``origin``) when made with
    :meth:`from_bounds`, which is what makes grids of neighbouring tiles line up cell for cell.
    """

    xmin: float
    ymax: float
    width: int
    height: int
    resolution: float

    @classmethod
    def from_bounds(
        cls,
        minx: float,
        miny: float,
        maxx: float,
        maxy: float,
        resolution: float,
        origin: tuple[float, float] = (0.0, 0.0),
    ) -> GridSpec:
        """The smallest global-aligned grid covering the box [minx, maxx) x [miny, maxy)."""
        if not resolution > 0 or not math.isfinite(resolution):
            raise ValueError(f"grid resolution must be a positive number, got {resolution!r}")
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)) or maxx < minx or maxy < miny:
            raise ValueError(f"grid bounds are not a finite box: {(minx, miny, maxx, maxy)}")
        ox, oy = origin
        i0 = math.floor((minx - ox) / resolution + 1e-9)
        j0 = math.floor((miny - oy) / resolution + 1e-9)
        i1 = max(math.ceil((maxx - ox) / resolution - 1e-9), i0 + 1)
        j1 = max(math.ceil((maxy - oy) / resolution - 1e-9), j0 + 1)
        return cls(
            xmin=ox + i0 * resolution,
            ymax=oy + j1 * resolution,
            width=int(i1 - i0),
            height=int(j1 - j0),
            resolution=float(resolution),
        )

    @classmethod
    def from_points(cls, x: np.ndarray, y: np.ndarray, resolution: float, pad: int = 0) -> GridSpec:
        """The aligned grid covering the points (plus ``pad`` cells each side)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            raise ValueError("no finite point coordinates to build a grid from")
        p = pad * resolution
        # from_bounds forgives 1e-9 cells of float noise at both ends; nudge the box outwards by more than that
        # so points a hair below a cell edge (minimum) or on the exclusive maximum still get a cell
        return cls.from_bounds(
            float(x[ok].min()) - p - resolution * 1e-6,
            float(y[ok].min()) - p - resolution * 1e-6,
            float(x[ok].max()) + p + resolution * 1e-6,
            float(y[ok].max()) + p + resolution * 1e-6,
            resolution,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def xmax(self) -> float:
        return self.xmin + self.width * self.resolution

    @property
    def ymin(self) -> float:
        return self.ymax - self.height * self.resolution

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.xmin, self.ymin, self.xmax, self.ymax)

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, self.xmin, 0.0, -self.resolution, self.ymax)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, inside) for each point; row/col are only meaningful where ``inside``."""
        col = np.floor((np.asarray(x, dtype=np.float64) - self.xmin) / self.resolution).astype(np.int64)
        row = np.floor((self.ymax - np.asarray(y, dtype=np.float64)) / self.resolution).astype(np.int64)
        inside = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        return row, col, inside

    def flat_index(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat cell index (row * width + col) per point, -1 outside the grid or for non-finite coordinates."""
        row, col, inside = self.cell_of(x, y)
        idx = row * self.width + col
        idx[~inside] = -1
        return idx

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centre coordinates as two (height, width) arrays."""
        cx = self.xmin + (np.arange(self.width) + 0.5) * self.resolution
        cy = self.ymax - (np.arange(self.height) + 0.5) * self.resolution
        return np.meshgrid(cx, cy)

    def window_of(self, other: GridSpec) -> tuple[int, int, int, int]:
        """(row_off, col_off, height, width) of ``other`` inside this grid (same resolution and alignment)."""
        if not math.isclose(other.resolution, self.resolution):
            raise ValueError("grids have different resolutions")
        col_off = round((other.xmin - self.xmin) / self.resolution)
        row_off = round((self.ymax - other.ymax) / self.resolution)
        return row_off, col_off, other.height, other.width

    def subgrid(self, minx: float, miny: float, maxx: float, maxy: float) -> GridSpec:
        """The aligned sub-grid covering a box, on the same cell lattice as this grid."""
        ox = self.xmin - math.floor(self.xmin / self.resolution) * self.resolution
        oy = self.ymax - math.floor(self.ymax / self.resolution) * self.resolution
        return GridSpec.from_bounds(minx, miny, maxx, maxy, self.resolution, origin=(ox, oy))


def cell_reduce(idx: np.ndarray, values: np.ndarray, ncells: int, how: str) -> np.ndarray:
    """Reduce ``values`` per flat cell index (``idx`` < 0 ignored): "min", "max", "mean", "count" or "sum".

    Empty cells are NaN (0 for "count" and "sum").
    """
    keep = idx >= 0
    idx = idx[keep]
    if how == "count":
        return np.bincount(idx, minlength=ncells).astype(np.float64)
    v = np.asarray(values, dtype=np.float64)[keep]
    if how in ("sum", "mean"):
        s = np.bincount(idx, weights=v, minlength=ncells)
        if how == "sum":
            return s
        n = np.bincount(idx, minlength=ncells)
        out = np.full(ncells, np.nan)
        np.divide(s, n, out=out, where=n > 0)
        return out
    if how == "min":
        out = np.full(ncells, np.inf)
        np.minimum.at(out, idx, v)
        out[np.isinf(out)] = np.nan
        return out
    if how == "max":
        out = np.full(ncells, -np.inf)
        np.maximum.at(out, idx, v)
        out[np.isinf(out)] = np.nan
        return out
    raise ValueError(f"unknown cell reduction {how!r}")


def finite_points(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x, y, z`` as float64 arrays and the mask of the points with finite coordinates (that are also
    ``candidates``, when given)."""
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    if candidates is not None:
        ok &= np.asarray(candidates, dtype=bool)
    return x, y, z, ok
