"""Depth maps of panoramas from the point cloud (z-buffer), 16-bit COGs, and measuring in a panorama.

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

__all__ = ["depth_buffer", "fill_holes", "front_points", "front_runs", "measure", "pixel_keys", "read_depth",
           "write_depth_cog"]

FloatArray = NDArray[np.float64]
DEPTH_MAX_DEFAULT = 100.0


def pixel_keys(points: ArrayLike, pose: camera.Pose, width: int
               ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Flat pixel index (row * width + col) in a ``width x width/2`` panorama and distance of every point."""
    height = width // 2
    u, v, r = camera.project_points(np.asarray(points, dtype=np.float64), pose, width, height)
    key = np.clip(np.floor(v).astype(np.int64), 0, height - 1) * width + np.floor(u).astype(np.int64) % width
    return key, r


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
    levels have no holes between the points of a near surface, so nothing behind it shows through.
    """
    pts = np.asarray(points, dtype=np.float64)
    ok = np.ones(len(pts), dtype=bool)
    for level in range(levels):
        key, r = pixel_keys(pts, pose, max(16, width >> level))
        order, front = front_runs(key, r, gap_abs, gap_rel)
        on_front = np.empty(len(pts), dtype=bool)
        on_front[order] = front
        ok &= on_front
    return ok


def depth_buffer(points: ArrayLike, pose: camera.Pose, width: int, *, max_range: float = np.inf,
                 min_range: float = 0.3, levels: int = 4, gap_abs: float = 0.2, gap_rel: float = 0.02
                 ) -> NDArray[np.float32]:
    """Distance to the visible surface per pixel of a ``width x width/2`` panorama (``inf``: no point there).

    Only points the camera sees count (:func:`front_points`); the value is their mean distance in the pixel,
    which estimates the distance along the pixel's centre ray without the bias of the single nearest point on
    oblique surfaces. Points closer than ``min_range`` (the vehicle, the operator) are ignored.
    """
    height = width // 2
    pts = np.asarray(points, dtype=np.float64)
    key, r = pixel_keys(pts, pose, width)
    keep = (r >= min_range) & (r <= max_range)
    idx = np.flatnonzero(keep)
    seen = front_points(pts[idx], pose, width, levels=levels, gap_abs=gap_abs, gap_rel=gap_rel)
    k, d = key[idx[seen]], r[idx[seen]]
    total = np.bincount(k, weights=d, minlength=height * width)
    count = np.bincount(k, minlength=height * width)
    depth = np.full(height * width, np.inf, dtype=np.float32)
    hit = count > 0
    depth[hit] = (total[hit] / count[hit]).astype(np.float32)
    return depth.reshape(height, width)


def fill_holes(depth: NDArray[np.float32], iterations: int = 2) -> NDArray[np.float32]:
    """Close small holes (``inf`` pixels), ``iterations`` pixels deep, with the mean of their 3x3 neighbours.

    Only neighbours on the nearest surface around the hole count (within 10 % of the nearest), so a hole in a
    façade is filled with façade, never with what lies behind it.
    """
    out = depth.copy()
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(iterations):
        empty = ~np.isfinite(out)
        if not empty.any():
            break
        padded = np.concatenate([out[:, -1:], out, out[:, :1]], axis=1)  # columns wrap around
        valid = np.isfinite(padded)
        nearest = cv2.erode(np.where(valid, padded, np.float32(3e38)), kernel)
        near_ok = valid & (padded <= 1.1 * cv2.dilate(nearest, kernel))
        total = cv2.boxFilter(np.where(near_ok, padded, 0).astype(np.float32), -1, (3, 3), normalize=False)
        count = cv2.boxFilter(near_ok.astype(np.float32), -1, (3, 3), normalize=False)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.inf)[:, 1:-1]
        out[empty] = mean[empty]
    return out


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


def measure(pano, u: float, v: float, *, depth: NDArray[np.float32] | None = None, window: int = 3) -> FloatArray:
    """The 3D point (job CRS) seen at continuous image coordinates ``(u, v)`` of panorama ``pano``.

    ``(u, v)`` are in pixels of the panorama image (``pano.width x pano.height``; of the depth map when the
    panorama has no size). The click's ray is intersected with a plane fitted to the depth samples around it
    (only samples on the clicked surface, outliers dropped; the window grows once where the samples do not span
    a plane), which keeps the error well below the size of a depth pixel; where no plane fits, the depth at the
    click is used. Raises :class:`InputError` where the depth map has no data near the click.
    """
    if depth is None:
        source = pano.products.get("depth")
        if not source:
            raise InputError(pano.name, "has no depth map (run the depth step with a point cloud)")
        depth = read_depth(source)
    dh, dw = depth.shape
    width = pano.width or dw
    height = pano.height or dh
    ray = camera.direction_from_pixel(u, v, width, height)
    ci = int(np.floor(u * dw / width)) % dw
    cj = int(np.clip(np.floor(v * dh / height), 0, dh - 1))
    dist = None
    for w in (window, window + 1):
        d0, t = _plane_distance(depth, ci, cj, w, ray)
        if t is not None:
            dist = t
            break
        if dist is None and d0 is not None:
            dist = d0
    if dist is None:
        raise InputError(pano.name, f"no depth near pixel ({u:.1f}, {v:.1f})")
    return pano.pose.to_world(ray * dist)


def _plane_distance(depth: NDArray[np.float32], ci: int, cj: int, window: int, ray: FloatArray
                    ) -> tuple[float | None, float | None]:
    """(depth at the click or the window's median, distance along ``ray`` to the fitted plane or None)."""
    dh, dw = depth.shape
    js = np.clip(np.arange(cj - window, cj + window + 1), 0, dh - 1)
    is_ = np.arange(ci - window, ci + window + 1) % dw
    jj, ii = np.meshgrid(js, is_, indexing="ij")
    d = depth[jj, ii]
    ok = np.isfinite(d)
    if not ok.any():
        return None, None
    d0 = float(depth[cj, ci]) if np.isfinite(depth[cj, ci]) else float(np.median(d[ok]))
    same = ok & (np.abs(d - d0) <= 0.12 * d0 + 0.3)  # the clicked surface only, not what is beside or behind it
    pts = camera.direction_from_pixel(ii[same] + 0.5, jj[same] + 0.5, dw, dh) * d[same][:, None]
    for _ in range(2):  # fit, drop outliers beyond 3 robust sigmas, refit
        if len(pts) < 6:
            return d0, None
        centre = pts.mean(axis=0)
        _, sv, vt = np.linalg.svd(pts - centre, full_matrices=False)
        resid = np.abs((pts - centre) @ vt[-1])
        inliers = resid <= 3 * (1.4826 * np.median(resid) + 1e-4)
        if inliers.all():
            break
        pts = pts[inliers]
    if len(pts) < 6:
        return d0, None
    centre = pts.mean(axis=0)
    _, sv, vt = np.linalg.svd(pts - centre, full_matrices=False)
    normal = vt[-1]
    denom = float(normal @ ray)
    n = np.sqrt(len(pts))
    flat = sv[1] >= 0.25 * sv[0] or sv[2] / n <= 0.01 + 0.001 * d0  # a patch, or an elongated but clean plane
    if not flat or abs(denom) < 0.05:  # a scan line or a noisy strip; or a plane seen edge-on
        return d0, None
    t = float(normal @ centre) / denom
    if t <= 0 or abs(t - d0) > 0.5 + 0.15 * d0:
        return d0, None
    return d0, t
