"""Re-projections of equirectangular panoramas: cube faces and perspective views, with cached remap grids.

All grids are built once per (image size, output geometry) from :mod:`cim.camera`'s equirectangular mapping and
converted to OpenCV's fixed-point maps, so a batch of equally sized panoramas only pays ``cv2.remap``.

Cube faces follow the Marzipano layout: ``f`` looks forward (the panorama centre), ``r`` right, ``b`` back,
``l`` left (all with the image top up), ``u`` up with its bottom edge joining ``f``'s top edge, ``d`` down with its
top edge joining ``f``'s bottom edge. Faces are square; pixel ``(i, j)`` samples the direction through its centre.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from cim import camera

__all__ = [
    "CUBE_FACES",
    "cube_face_directions",
    "cube_faces",
    "perspective_grid",
    "perspective_view",
    "view_pixels_to_equirect",
]

FloatArray = NDArray[np.float64]

# face -> (forward, right, image-up) unit vectors in the camera frame (x forward, y left, z up)
CUBE_FACES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    "f": ((1, 0, 0), (0, -1, 0), (0, 0, 1)),
    "r": ((0, -1, 0), (-1, 0, 0), (0, 0, 1)),
    "b": ((-1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "l": ((0, 1, 0), (1, 0, 0), (0, 0, 1)),
    "u": ((0, 0, 1), (0, -1, 0), (-1, 0, 0)),
    "d": ((0, 0, -1), (0, -1, 0), (1, 0, 0)),
}


def cube_face_directions(face: str, size: int) -> FloatArray:
    """Camera-frame directions (not unit) through the pixel centres of one cube face, shape ``(size, size, 3)``."""
    fwd, right, up = (np.asarray(v, dtype=np.float64) for v in CUBE_FACES[face])
    t = (np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0
    a = t[None, :, None]  # column -> right
    b = t[:, None, None]  # row -> down
    return fwd + a * right - b * up


def _fixed_point_maps(u: NDArray[np.float32], v: NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray]:
    # remap samples at integer coordinates = pixel centres, so continuous (u, v) shift by half a pixel.
    return cv2.convertMaps(u - 0.5, v - 0.5, cv2.CV_16SC2)


@lru_cache(maxsize=8)
def _cube_maps(width: int, height: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    us, vs = [], []
    for face in CUBE_FACES:
        u, v = camera.pixel_from_direction(cube_face_directions(face, size), width, height)
        us.append(u.astype(np.float32))
        vs.append(v.astype(np.float32))
    return _fixed_point_maps(np.concatenate(us), np.concatenate(vs))


def cube_faces(image: np.ndarray, size: int, *, yaw_shift_deg: float = 0.0) -> dict[str, np.ndarray]:
    """The six cube faces (``size`` x ``size``) of an equirectangular image, keyed ``f r b l u d``.

    ``yaw_shift_deg`` turns the cube about the camera's up axis before sampling (an exact column roll of the
    source, rounded to whole pixels): pass the panorama's heading to get faces whose ``f`` looks at grid north.
    """
    h, w = image.shape[:2]
    if yaw_shift_deg:
        shift = int(round(w * yaw_shift_deg / 360.0)) % w
        if shift:
            image = np.roll(image, shift, axis=1)
    map1, map2 = _cube_maps(w, h, size)
    strip = cv2.remap(image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return {face: strip[k * size:(k + 1) * size] for k, face in enumerate(CUBE_FACES)}


def _view_rotation(yaw_deg: float, pitch_deg: float) -> FloatArray:
    """camera_from_view rotation: the view looks at azimuth ``yaw`` (positive left) and elevation ``pitch``."""
    a, e = np.radians(yaw_deg), np.radians(pitch_deg)
    fwd = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    left = np.array([-np.sin(a), np.cos(a), 0.0])
    up = np.cross(fwd, left)
    return np.column_stack([fwd, left, up])


def _view_directions(px: FloatArray, py: FloatArray, yaw: float, pitch: float, focal: float, width: int,
                     height: int) -> FloatArray:
    """Camera-frame directions of (continuous) view pixel coordinates ``(px, py)``."""
    x = (np.asarray(px) - width / 2.0) / focal
    y = (np.asarray(py) - height / 2.0) / focal
    local = np.stack([np.ones_like(x), -x, -y], axis=-1)  # forward, left, up in the view frame
    return local @ _view_rotation(yaw, pitch).T


@lru_cache(maxsize=32)
def perspective_grid(src_width: int, src_height: int, yaw: float, pitch: float, focal: float, width: int,
                     height: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached fixed-point remap maps of a pinhole view (``focal`` in pixels) into an equirectangular image."""
    j, i = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    d = _view_directions(i, j, yaw, pitch, focal, width, height)
    u, v = camera.pixel_from_direction(d, src_width, src_height)
    return _fixed_point_maps(u.astype(np.float32), v.astype(np.float32))


def perspective_view(image: np.ndarray, yaw: float, pitch: float, focal: float, width: int, height: int
                     ) -> np.ndarray:
    """A pinhole view of an equirectangular image looking at azimuth ``yaw``, elevation ``pitch`` (degrees)."""
    h, w = image.shape[:2]
    map1, map2 = perspective_grid(w, h, float(yaw), float(pitch), float(focal), int(width), int(height))
    return cv2.remap(image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def view_pixels_to_equirect(px: FloatArray, py: FloatArray, yaw: float, pitch: float, focal: float, width: int,
                            height: int, src_width: int, src_height: int) -> tuple[FloatArray, FloatArray]:
    """Continuous equirectangular coordinates ``(u, v)`` of view pixel coordinates (for mapping boxes back)."""
    d = _view_directions(px, py, yaw, pitch, focal, width, height)
    return camera.pixel_from_direction(d, src_width, src_height)
