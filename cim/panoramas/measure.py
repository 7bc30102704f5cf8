"""Measuring in a panorama: a click (image pixel) becomes a 3D point through the panorama's depth map.

The depth map holds, per equirectangular pixel, the distance to the surface seen there; a single pixel is noisy
(the points of a mobile scanner fall anywhere inside it, in scan lines) and often empty. ``measure`` therefore
fits a plane to the depth samples around the click (RANSAC over the samples nearest to it, scored in a wider
window, refined by least squares) and intersects the click's ray with it: on a surface seen at a grazing angle
(the street 10 m ahead) a plane over a few scan lines is what pins the distance down to centimetres.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cim import camera
from cim.errors import InputError
from cim.panoramas.depth import read_depth

__all__ = ["measure", "ray_plane_distance"]

FloatArray = NDArray[np.float64]
HYPOTHESES = 64  # RANSAC plane hypotheses per click
SEEDS = 16  # hypotheses are drawn from the samples nearest to the click


def measure(pano, u: float, v: float, *, depth: NDArray[np.float32] | None = None, radius: int = 12
            ) -> FloatArray:
    """The 3D point (job CRS) seen at continuous image coordinates ``(u, v)`` of panorama ``pano``.

    ``(u, v)`` are in pixels of the panorama image (``pano.width x pano.height``; of the depth map when the
    panorama has no size). ``depth`` defaults to the panorama's depth COG; ``radius`` is the half-size of the
    window (depth-map pixels) the plane is fitted in. Where no plane fits (a pole, a branch, a depth edge) the
    depth of the sample nearest to the click is used. Raises :class:`InputError` where the depth map has no
    data near the click.
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
    pts, pix = window_samples(depth, u * dw / width, v * dh / height, radius)
    if len(pts) == 0:
        raise InputError(pano.name, f"no depth near pixel ({u:.1f}, {v:.1f})")
    dist = ray_plane_distance(pts, pix, ray, radius)
    if dist is None:
        dist = float(np.linalg.norm(pts[np.argmin(pix)]))
    return pano.pose.to_world(ray * dist)


def window_samples(depth: NDArray[np.float32], x: float, y: float, radius: int
                   ) -> tuple[FloatArray, FloatArray]:
    """Camera-frame points of the valid depth pixels within ``radius`` pixels of ``(x, y)`` (depth-map pixel
    coordinates; columns wrap) and their distance in pixels from it."""
    dh, dw = depth.shape
    ci, cj = int(np.floor(x)), int(np.floor(y))
    rows = np.arange(max(cj - radius, 0), min(cj + radius + 1, dh))
    cols = np.arange(ci - radius, ci + radius + 1)
    jj, ii = np.meshgrid(rows, cols, indexing="ij")
    d = depth[jj, ii % dw].astype(np.float64)
    ok = np.isfinite(d) & (d > 0)
    jj, ii, d = jj[ok], ii[ok], d[ok]
    pts = camera.direction_from_pixel(ii + 0.5, jj + 0.5, dw, dh) * d[:, None]
    return pts, np.hypot(ii + 0.5 - x, jj + 0.5 - y)


def ray_plane_distance(pts: FloatArray, pix: FloatArray, ray: FloatArray, radius: float) -> float | None:
    """Distance along ``ray`` to the plane of the surface at the click, or None where no plane fits.

    ``pts`` are camera-frame samples, ``pix`` their image distance (pixels) from the click. Plane hypotheses
    come from triples of the :data:`SEEDS` samples nearest to the click; each is scored by the samples within
    a tolerance of it, weighted by closeness to the click. The best one must hold one of the three nearest
    samples (the click is on it, not on something beside it), is refined by least squares on its inliers and
    must be spanned in two directions (not a single scan line).
    """
    if len(pts) < 8:
        return None
    rng = np.random.default_rng(0)  # deterministic: the same click gives the same point
    near = np.argsort(pix, kind="stable")
    seeds = near[:SEEDS]
    tri = np.array([rng.choice(seeds, size=3, replace=False) for _ in range(HYPOTHESES)])
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    normals = np.cross(b - a, c - a)
    size = np.linalg.norm(normals, axis=1)
    good = size > 1e-9
    if not good.any():
        return None
    normals = normals[good] / size[good, None]
    offsets = np.einsum("ij,ij->i", normals, a[good])
    rng_m = np.linalg.norm(pts, axis=1)
    tol = 0.02 + 0.003 * rng_m  # sub-pixel placement of the samples + scanner noise
    inlier = np.abs(pts @ normals.T - offsets) <= tol[:, None]  # (samples, hypotheses)
    weight = np.exp(-0.5 * (pix / (0.5 * radius)) ** 2)
    score = weight @ inlier
    score[~inlier[near[:3]].any(axis=0)] = -1.0
    best = int(np.argmax(score))
    if score[best] <= 0:
        return None
    normal, centre = _refine(pts[inlier[:, best]], weight[inlier[:, best]])
    if normal is None:
        return None
    denom = float(normal @ ray)
    if abs(denom) < 0.05:  # the plane is seen edge-on
        return None
    t = float(normal @ centre) / denom
    d_near = float(rng_m[near[0]])
    return t if 0 < t and abs(t - d_near) <= 0.5 + 0.15 * d_near else None


def _refine(pts: FloatArray, weight: FloatArray) -> tuple[FloatArray | None, FloatArray]:
    """Weighted least-squares plane (unit normal, centroid) of inlier samples; None when they are too few or
    lie along one line."""
    if len(pts) < 6:
        return None, pts.mean(axis=0)
    w = weight / weight.sum()
    centre = w @ pts
    _, sv, vt = np.linalg.svd((pts - centre) * np.sqrt(w)[:, None], full_matrices=False)
    if sv[1] < 0.1 * sv[0]:
        return None, centre
    return vt[-1], centre
