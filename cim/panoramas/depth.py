"""Depth maps of panoramas from the point cloud (z-buffer) and their 16-bit COGs (measuring: :mod:`.measure`).

A depth map stores, per equirectangular pixel, the distance from the camera centre to the nearest point seen
through that pixel. As a file it is a single-band UInt16 Cloud-Optimized GeoTIFF (no georeferencing: the raster
is the panorama's pixel grid) with ``0`` = no data and ``value = 1 + round((d − min) / (max − min) · 65534)``,
the metadata ``PANORAMA_DEPTH_MIN`` / ``PANORAMA_DEPTH_MAX`` (metres) giving the scale (VC Map's panorama depth
layout), so 50 m span at 0.8 mm steps.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from cim import camera
from cim.errors import InputError
from cim.fileutil import atomic_write

__all__ = ["closed_front_end", "depth_buffer", "fill_holes", "flat_keys", "front_of_projected", "front_points",
           "front_runs", "read_depth", "write_depth_cog"]

DEPTH_MAX_DEFAULT = 100.0


def flat_keys(u: NDArray[np.float64], v: NDArray[np.float64], width: int) -> NDArray[np.int64]:
    """Flat pixel index (row * width + col) of continuous image coordinates in a ``width x width/2`` panorama."""
    height = width // 2
    return np.clip(np.floor(v).astype(np.int64), 0, height - 1) * width + np.floor(u).astype(np.int64) % width


def front_runs(keys: NDArray[np.int64], ranges: NDArray[np.float64], gap_abs: float, gap_rel: float
               ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Sort points by (pixel, distance) and flag the front surface of every pixel.

    Returns the sort order and, in that order, whether each point belongs to the run of its pixel before the
    first jump in distance larger than ``gap_abs + gap_rel * d``: a surface seen at a grazing angle stays one
    run (its distances grow smoothly), a point behind an occluder comes after a jump. One sort, no loops.
    """
    order = np.lexsort((ranges, keys))
    ks, rs = keys[order], ranges[order]
    start = np.ones(len(ks), dtype=bool)
    start[1:] = ks[1:] != ks[:-1]
    jump = np.zeros(len(ks), dtype=bool)
    jump[1:] = (rs[1:] - rs[:-1] > gap_abs + gap_rel * rs[:-1]) & ~start[1:]
    count = np.cumsum(jump)
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(ks)), 0))
    return order, count == count[group_start]


def front_points(points: ArrayLike, pose: camera.Pose, width: int, *, levels: int = 4, gap_abs: float = 0.2,
                 gap_rel: float = 0.02) -> NDArray[np.bool_]:
    """Points a camera sees: on the front surface of their pixel at every level of a pyramid of pixel grids.

    Level 0 is ``width x width/2``; each further level halves the width. Fine levels keep edges sharp, coarse
    levels have no holes between the points of a near surface, so nothing behind it shows through. The far end
    of every pixel's front surface is also closed morphologically (3x3) at every level (:func:`closed_front_end`):
    a near object scanned in stripes a pixel or two apart (a post beside a profile scanner) hides what lies
    between its stripes, while outlines, and surfaces seen at a grazing angle, stay as they are.
    """
    u, v, r = camera.project_points(np.asarray(points, dtype=np.float64), pose, width, width // 2)
    return front_of_projected(u, v, r, width, levels=levels, gap_abs=gap_abs, gap_rel=gap_rel)


def front_of_projected(u: NDArray[np.float64], v: NDArray[np.float64], r: NDArray[np.float64], width: int, *,
                       levels: int = 4, gap_abs: float = 0.2, gap_rel: float = 0.02) -> NDArray[np.bool_]:
    """:func:`front_points` of points already projected (:func:`cim.camera.project_points`) into a
    ``width x width/2`` panorama: image coordinates ``(u, v)`` and distances ``r``."""
    ok = np.ones(len(r), dtype=bool)
    for level in range(levels):
        level_width = max(16, width >> level)
        scale = level_width / width  # image coordinates scale with the width
        key = flat_keys(u * scale, v * scale, level_width)
        order, front = front_runs(key, r, gap_abs, gap_rel)
        on_front = np.empty(len(r), dtype=bool)
        on_front[order] = front
        ok &= on_front
        surface, allowance = closed_front_end(key[order][front], r[order][front], level_width)
        ok &= r <= surface[key] + allowance[key] + gap_abs + gap_rel * surface[key]
    return ok


def closed_front_end(keys: NDArray[np.int64], ranges: NDArray[np.float64], width: int
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per pixel (flat, ``width x width/2``): the farthest distance of its front-surface points, closed by a 3x3
    grey-level closing on nearness (empty pixels count as infinitely far; columns wrap around), and how much
    farther a point may lie and still be on that surface.

    A gap up to two pixels wide between near pixels takes their distance; a linear ramp of distances and convex
    outlines are unchanged. The allowance is the pixel's own front depth plus half the spread of the front ends
    around it: large on a surface seen at a grazing angle (the road 20 m ahead spans metres per coarse pixel),
    small on a near object's stripes in front of a far wall.
    """
    n = width // 2 * width
    end = np.full(n, -np.inf, np.float32)
    np.maximum.at(end, keys, ranges.astype(np.float32))
    start = np.full(n, np.inf, np.float32)
    np.minimum.at(start, keys, ranges.astype(np.float32))
    hit = np.isfinite(start)
    kernel = np.ones((3, 3), np.uint8)

    def grid(values: NDArray[np.float32], fill: float) -> NDArray[np.float32]:
        g = np.where(hit, values, np.float32(fill)).reshape(width // 2, width)
        return np.concatenate([g[:, -1:], g, g[:, :1]], axis=1)  # columns wrap around

    near = cv2.erode(grid(end, np.inf), kernel, borderType=cv2.BORDER_REPLICATE)  # near pixels spread
    closed = cv2.dilate(near, kernel, borderType=cv2.BORDER_REPLICATE)[:, 1:-1].ravel()  # outlines shrink back
    spread = cv2.dilate(grid(end, -np.inf), kernel)[:, 1:-1].ravel() - near[:, 1:-1].ravel()
    spread = np.where(np.isfinite(spread), spread, 0.0)
    allowance = np.where(hit, end - start, 0.0) + 0.5 * spread
    return closed.astype(np.float64), allowance.astype(np.float64)


def depth_buffer(points: ArrayLike, pose: camera.Pose, width: int, *, max_range: float = np.inf,
                 min_range: float = 0.3, levels: int = 4, gap_abs: float = 0.2, gap_rel: float = 0.02
                 ) -> NDArray[np.float32]:
    """Distance to the visible surface per pixel of a ``width x width/2`` panorama (``inf``: no point there).

    Only points the camera sees count (:func:`front_points`); the value is their mean distance in the pixel,
    which estimates the distance along the pixel's centre ray without the bias of the single nearest point on
    oblique surfaces. Points closer than ``min_range`` (the vehicle, the operator) are ignored.
    """
    height = width // 2
    u, v, r = camera.project_points(np.asarray(points, dtype=np.float64), pose, width, height)
    idx = np.flatnonzero((r >= min_range) & (r <= max_range))
    seen = idx[front_of_projected(u[idx], v[idx], r[idx], width, levels=levels, gap_abs=gap_abs, gap_rel=gap_rel)]
    k, d = flat_keys(u[seen], v[seen], width), r[seen]
    total = np.bincount(k, weights=d, minlength=height * width)
    count = np.bincount(k, minlength=height * width)
    depth = np.full(height * width, np.inf, dtype=np.float32)
    hit = count > 0
    depth[hit] = (total[hit] / count[hit]).astype(np.float32)
    return depth.reshape(height, width)


def fill_holes(depth: NDArray[np.float32], gap: int = 2) -> NDArray[np.float32]:
    """Close holes (``inf`` pixels) up to ``gap`` pixels wide by linear interpolation between the two nearest
    valid pixels on either side, along rows, columns and both diagonals (columns wrap around).

    Only pairs on one surface count (their distances within 5 cm + 10 %), and a hole takes the mean of its
    directions weighted by the inverse span; a pixel with no such pair stays empty. Interpolating between both
    sides keeps a surface seen at a grazing angle (the street ahead, 10 cm more distance per pixel) unbiased,
    and nothing is filled across a depth edge or grown beyond a surface's border.
    """
    valid = np.isfinite(depth)
    padded = np.pad(np.pad(depth, ((gap, gap), (0, 0)), constant_values=np.inf), ((0, 0), (gap, gap)), mode="wrap")
    total = np.zeros(depth.shape, np.float64)
    weight = np.zeros(depth.shape, np.float64)
    for dj, di in ((0, 1), (1, 0), (1, 1), (1, -1)):
        v0, k0 = _nearest_along(padded, gap, -dj, -di)
        v1, k1 = _nearest_along(padded, gap, dj, di)
        span = k0.astype(np.float64) + k1
        ok = ~valid & (span <= gap + 1)
        ok[ok] = np.abs(v1[ok] - v0[ok]) <= 0.05 + 0.1 * np.minimum(v0[ok], v1[ok])
        value = (v0[ok] * k1[ok] + v1[ok] * k0[ok]) / span[ok]
        total[ok] += value / span[ok]
        weight[ok] += 1.0 / span[ok]
    out = depth.copy()
    fill = weight > 0
    out[fill] = (total[fill] / weight[fill]).astype(np.float32)
    return out


def _nearest_along(padded: NDArray[np.float32], reach: int, dj: int, di: int
                   ) -> tuple[NDArray[np.float32], NDArray[np.int8]]:
    """Value and step count (1..reach; ``reach + 1`` with ``inf`` = none) of the nearest finite pixel in the
    direction ``(dj, di)`` from every pixel of the unpadded map (``padded``: ``reach`` pixels on every side)."""
    height, width = padded.shape[0] - 2 * reach, padded.shape[1] - 2 * reach
    value = np.full((height, width), np.inf, np.float32)
    steps = np.full((height, width), reach + 1, np.int8)
    for k in range(reach, 0, -1):  # nearest last, so it wins
        shifted = padded[reach + k * dj: reach + k * dj + height, reach + k * di: reach + k * di + width]
        found = np.isfinite(shifted)
        value[found] = shifted[found]
        steps[found] = k
    return value, steps


def write_depth_cog(path: str | Path, depth: NDArray[np.float32], *, min_depth: float = 0.0,
                    max_depth: float = DEPTH_MAX_DEFAULT, tags: dict[str, str] | None = None) -> Path:
    """Write a depth map as a UInt16 COG (0 = no data; distances beyond ``max_depth`` are dropped)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    path = Path(path)
    scale = (max_depth - min_depth) / 65534.0
    valid = np.isfinite(depth) & (depth >= min_depth) & (depth <= max_depth)
    coded = np.zeros(depth.shape, dtype=np.uint16)
    coded[valid] = (1 + np.round((depth[valid] - min_depth) / scale)).astype(np.uint16)
    height, width = depth.shape
    profile = {
        "driver": "COG", "width": width, "height": height, "count": 1, "dtype": "uint16", "nodata": 0,
        "compress": "DEFLATE", "predictor": 2, "blocksize": 256, "overview_resampling": "nearest",
    }
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(coded, 1)
            dst.update_tags(PANORAMA_DEPTH_VERSION="1.0", PANORAMA_DEPTH_MIN=f"{min_depth:g}",
                            PANORAMA_DEPTH_MAX=f"{max_depth:g}", **(tags or {}))
    return path


def read_depth(path: str | Path) -> NDArray[np.float32]:
    """A depth COG back as float32 metres (NaN = no data)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                coded = src.read(1)
                tags = src.tags()
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(path, f"cannot read the depth map ({exc})") from None
    if "PANORAMA_DEPTH_MAX" not in tags:
        raise InputError(path, "not a panorama depth map (no PANORAMA_DEPTH_MAX tag)")
    lo, hi = float(tags.get("PANORAMA_DEPTH_MIN", 0.0)), float(tags["PANORAMA_DEPTH_MAX"])
    depth = lo + (coded.astype(np.float32) - 1.0) * np.float32((hi - lo) / 65534.0)
    depth[coded == 0] = np.nan
    return depth
