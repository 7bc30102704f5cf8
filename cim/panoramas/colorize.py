"""Colour the point cloud from the panoramas: each point takes the colour of the nearest panorama that sees it.

Visibility is a depth-buffer test built from the cloud itself: a point is seen when no other point lies clearly
in front of it in its pixel, at several pixel sizes (see :func:`visible`). Points no panorama sees
keep their colour (or stay uncoloured) and are reported; they are never coloured through a wall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from cim import camera
from cim.panoramas.depth import front_of_projected
from cim.panoramas.georef import Panorama

__all__ = ["ColorizeOptions", "colorize_points", "visible"]


@dataclass(frozen=True)
class ColorizeOptions:
    max_range: float = 30.0  # metres; farther panoramas see the point too coarsely
    min_range: float = 1.0  # ignore the vehicle and anything touching the camera
    buffer_width: int = 2048  # finest z-buffer (equirectangular width); coarser levels halve it
    levels: int = 4  # 2048, 1024, 512, 256: a coarse level closes the holes between a near occluder's points
    gap_abs: float = 0.2  # a jump in distance larger than gap_abs + gap_rel * d inside one pixel = occlusion
    gap_rel: float = 0.02


def visible(points: NDArray[np.float64], pose: camera.Pose, opts: ColorizeOptions
            ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Which points a camera sees (:func:`cim.panoramas.depth.front_points`), with image coordinates for an
    image of width 1 and distances."""
    pts = np.asarray(points, dtype=np.float64)
    local = pose.to_camera(pts)
    r = np.linalg.norm(local, axis=1)
    seen = (r >= opts.min_range) & (r <= opts.max_range)
    idx = np.flatnonzero(seen)
    bu, bv = camera.pixel_from_direction(local[idx], opts.buffer_width, opts.buffer_width // 2)
    seen[idx] = front_of_projected(bu, bv, r[idx], opts.buffer_width, levels=opts.levels, gap_abs=opts.gap_abs,
                                   gap_rel=opts.gap_rel)
    u, v = camera.pixel_from_direction(local, 2, 1)
    return seen, u / 2.0, v / 2.0, r


def sample(image: np.ndarray, u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.uint8]:
    """Bilinear colours (RGB) of an equirectangular BGR image at continuous coordinates ``(u, v)`` in pixels."""
    n = len(u)
    cols = 4096  # OpenCV maps must stay below 32767 pixels a side
    rows = -(-n // cols)
    mapx = np.zeros(rows * cols, np.float32)
    mapy = np.zeros(rows * cols, np.float32)
    mapx[:n], mapy[:n] = u - 0.5, v - 0.5
    bgr = cv2.remap(image, mapx.reshape(rows, cols), mapy.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_WRAP)
    return bgr.reshape(-1, 3)[:n, ::-1]


def colorize_points(
    points: NDArray[np.float64],
    panoramas: Sequence[Panorama],
    load_image: Callable[[Panorama], np.ndarray],
    opts: ColorizeOptions = ColorizeOptions(),
) -> tuple[NDArray[np.uint8], NDArray[np.int32], NDArray[np.float64]]:
    """RGB colours (n, 3) u8, the index of the panorama each came from (-1: none sees it) and its distance.

    ``load_image(pano)`` returns the (anonymized) BGR equirectangular image; panoramas farther than
    ``max_range`` from every point are skipped without loading their image.
    """
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    rgb = np.zeros((n, 3), dtype=np.uint8)
    source = np.full(n, -1, dtype=np.int32)
    best = np.full(n, np.inf)
    if n == 0:
        return rgb, source, best
    lo, hi = pts.min(axis=0) - opts.max_range, pts.max(axis=0) + opts.max_range
    for k, pano in enumerate(panoramas):
        c = np.asarray(pano.position)
        if np.any(c < lo) or np.any(c > hi):
            continue
        seen, un, vn, r = visible(pts, pano.pose, opts)
        better = seen & (r < best)
        if not better.any():
            continue
        image = load_image(pano)
        w = image.shape[1]
        rgb[better] = sample(image, un[better] * w, vn[better] * w)
        source[better] = k
        best[better] = r[better]
    return rgb, source, best
