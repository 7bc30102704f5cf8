"""The DTMs buildings take their ground heights from: the job's DTM around a tile (while the tiles run) and a
window of a DTM raster or mosaic (after them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cim.points import PointCloud
from cim.terrain.dtm import dtm_grid
from cim.terrain.grid import GridSpec


def usable(dtm: tuple[np.ndarray, GridSpec] | None) -> tuple[np.ndarray, GridSpec] | None:
    """The DTM when it has a value (an all-nodata DTM leaves the ground to the ground points)."""
    return dtm if dtm is not None and np.isfinite(dtm[0]).any() else None


def follows_points(dtm: tuple[np.ndarray, GridSpec], xyz: np.ndarray, tolerance: float = 0.5,
                   min_points: int = 20) -> bool:
    """Whether the DTM runs through the points ``xyz`` (median height difference within ``tolerance``; at least
    ``min_points`` of them inside the grid): a DTM made from roof points labelled ground (class 2 inside the
    footprints of an image-matching cloud) is a roof surface, not the ground around the buildings."""
    from cim.terrain.dtm import sample_grid

    values, grid = dtm
    inside = ((xyz[:, 0] >= grid.xmin) & (xyz[:, 0] < grid.xmin + grid.width * grid.resolution)
              & (xyz[:, 1] <= grid.ymax) & (xyz[:, 1] > grid.ymax - grid.height * grid.resolution))
    if inside.sum() < min_points:
        return False
    z = sample_grid(values, grid, xyz[inside, 0], xyz[inside, 1])
    d = np.abs(z - xyz[inside, 2])
    return bool(np.median(d[np.isfinite(d)]) < tolerance) if np.isfinite(d).any() else False


def tile_dtm(path: Path, cloud: PointCloud, bounds: tuple[float, float, float, float]
             ) -> tuple[np.ndarray, GridSpec] | None:
    """The job's DTM over the buffered tile: its stored tile (the core square, ``path``) on a grid reaching over
    the buffer, whose margin is interpolated the same way from the buffer's ground points (class 2), since the
    neighbours' DTM tiles may not exist yet. None when the tile has no DTM value."""
    from cim.terrain.raster import read_raster

    if not path.is_file():
        return None
    core, cgrid = read_raster(path)
    if not np.isfinite(core).any():
        return None
    grid = GridSpec.from_bounds(*bounds, cgrid.resolution)
    cls = cloud.get("classification")
    values = dtm_grid(cloud, grid, ground=cls == 2) if cls is not None else np.full(grid.shape, np.nan)
    row = round((grid.ymax - cgrid.ymax) / grid.resolution)
    col = round((cgrid.xmin - grid.xmin) / grid.resolution)
    values[row:row + cgrid.height, col:col + cgrid.width] = core
    return values, grid


def dtm_window(path: Path, box: tuple[float, float, float, float]) -> tuple[np.ndarray, GridSpec] | None:
    """The cells of a DTM raster (GeoTIFF or VRT mosaic) meeting ``box``, nodata as NaN, with their grid; None
    when the raster does not meet the box."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        t = ds.transform
        res = t.a
        c0 = max(0, math.floor((box[0] - t.c) / res))
        c1 = min(ds.width, math.ceil((box[2] - t.c) / res))
        r0 = max(0, math.floor((t.f - box[3]) / res))
        r1 = min(ds.height, math.ceil((t.f - box[1]) / res))
        if c1 <= c0 or r1 <= r0:
            return None
        values = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0)).astype(np.float64)
        if ds.nodata is not None:
            values[values == ds.nodata] = np.nan
    return values, GridSpec(t.c + c0 * res, t.f - r0 * res, c1 - c0, r1 - r0, res)
