"""Equirectangular panoramas rendered by ray casting the scene, with their true depth maps.

Every pixel centre's direction (:func:`cim.camera.pixel_centre_directions`) is turned into the world by the
camera pose and cast against the scene. A hit's colour is the surface albedo (materials, windows, road markings,
leafy crowns) times a Lambert sun term, ``AMBIENT + (1 - AMBIENT) * max(0, n·sun)`` with the normal turned towards
the camera (optionally with cast shadows: the sun term is dropped where a ray towards the sun is blocked); rays
that meet nothing show a sky gradient above the horizon and a neutral far ground below it.
Colours are encoded as sRGB. Depth is the distance from the camera centre in metres (NaN where nothing was hit).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from cim import camera
from cim.fileutil import atomic_write
from cim.synth.raycast import Caster
from cim.synth.scene import Scene

SUN_AZIMUTH = 200.0  # degrees clockwise from north
SUN_ELEVATION = 40.0
AMBIENT = 0.45
SKY_HORIZON = np.array([0.78, 0.85, 0.95])
SKY_ZENITH = np.array([0.30, 0.50, 0.85])
FAR_GROUND = np.array([0.42, 0.44, 0.40])


def sun_direction() -> np.ndarray:
    """Unit vector towards the sun (world ENU)."""
    az, el = np.radians(SUN_AZIMUTH), np.radians(SUN_ELEVATION)
    return np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])


def facing_normals(normals: np.ndarray, view_dirs: np.ndarray) -> np.ndarray:
    """``normals`` turned towards the viewer looking along ``view_dirs``."""
    return np.where(np.einsum("ij,ij->i", normals, view_dirs)[:, None] > 0, -normals, normals)


def shade(normals: np.ndarray, view_dirs: np.ndarray, lit: np.ndarray | None = None) -> np.ndarray:
    """Lambert factor (n,) for surfaces with ``normals`` seen along ``view_dirs`` (normals flipped to the viewer);
    where ``lit`` is False (in a cast shadow) only the ambient term remains."""
    direct = np.clip(facing_normals(normals, view_dirs) @ sun_direction(), 0.0, None)
    if lit is not None:
        direct = np.where(lit, direct, 0.0)
    return AMBIENT + (1 - AMBIENT) * direct


_LUT_SIZE = 1 << 14


def _srgb_lut() -> np.ndarray:
    c = (np.arange(_LUT_SIZE) + 0.5) / _LUT_SIZE
    srgb = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.round(srgb * 255.0).astype(np.uint8)


_SRGB_LUT = _srgb_lut()


def to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear 0..1 colours to 8-bit sRGB (through a 16384-entry table: exact to the 8-bit output)."""
    index = (np.clip(linear, 0.0, 1.0) * (_LUT_SIZE - 1) + 0.5).astype(np.int32)
    return _SRGB_LUT[index]


@lru_cache(maxsize=2)
def _camera_directions(width: int) -> np.ndarray:
    return camera.pixel_centre_directions(width, width // 2).reshape(-1, 3)


def _in_sunlight(caster: Caster, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """True where nothing (buildings, cars, poles, crowns) stands between the surface point and the sun."""
    sun = sun_direction()
    towards = normals @ sun > 0
    lit = np.zeros(len(points), dtype=bool)
    if towards.any():
        origins = points[towards] + 0.02 * normals[towards]
        t, _, _ = caster.cast_visible(origins, np.broadcast_to(sun, origins.shape))
        lit[towards] = ~np.isfinite(t)
    return lit


def render(scene: Scene, caster: Caster, position: np.ndarray, rotation: np.ndarray, width: int,
           shadows: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (H, W, 3), depth float32 (H, W)) of a panorama at local ``position`` with world_from_body
    ``rotation``; ``shadows`` casts a second ray per lit pixel towards the sun."""
    height = width // 2
    dirs = np.einsum("ij,kj->ik", _camera_directions(width), rotation)
    origins = np.broadcast_to(position, dirs.shape)
    t, tri, crown = caster.cast_visible(origins, dirs)
    hit = np.isfinite(t)
    colour = np.empty((len(dirs), 3))
    points = position + dirs * np.where(hit, t, 0.0)[:, None]
    for mesh, normals, sel in ((caster.opaque, caster.opaque_normals, hit & ~crown),
                               (caster.crowns, caster.crown_normals, hit & crown)):
        if sel.any():
            albedo = scene.surface_albedo(points[sel], mesh, tri[sel])
            n = normals[tri[sel]]
            lit = _in_sunlight(caster, points[sel], facing_normals(n, dirs[sel])) if shadows else None
            colour[sel] = albedo * shade(n, dirs[sel], lit)[:, None]
    sky = ~hit
    up = dirs[sky, 2]
    mix = np.sqrt(np.clip(up, 0.0, 1.0))[:, None]
    colour[sky] = np.where(up[:, None] >= 0, SKY_HORIZON * (1 - mix) + SKY_ZENITH * mix, FAR_GROUND)
    rgb = to_srgb8(colour).reshape(height, width, 3)
    depth = np.where(hit, t, np.nan).astype(np.float32).reshape(height, width)
    return rgb, depth


def write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> Path:
    """Write an RGB image as baseline JPEG (atomic)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    with atomic_write(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return path


def write_depth(path: Path, depth: np.ndarray) -> Path:
    """Write a float32 depth map (metres, NaN = no hit) as a single-band float32 TIFF, deflate (atomic)."""
    params = [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE,
              cv2.IMWRITE_TIFF_PREDICTOR, cv2.IMWRITE_TIFF_PREDICTOR_FLOATINGPOINT]
    ok, data = cv2.imencode(".tiff", np.ascontiguousarray(depth, dtype=np.float32), params)
    if not ok:
        raise RuntimeError(f"TIFF encoding failed for {path}")
    with atomic_write(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return path
