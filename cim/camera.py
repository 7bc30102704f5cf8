"""Camera geometry: orientations and the equirectangular mapping, exactly as written in ``docs/conventions.md``.

This module is the one implementation of cim's conventions; every pose adapter and renderer calls it.

* World frame: the job's projected CRS treated as east-north-up (x east, y north, z up).
* Body / camera frame: FLU (x forward, y left, z up).
* Orientation: the rotation ``world_from_body``. From navigation angles in degrees (heading clockwise from grid
  north, pitch positive nose up, roll positive right side down)::

      R = Rz(90° - heading) · Ry(-pitch) · Rx(roll)

  stored as a unit quaternion ``(w, x, y, z)`` with ``w >= 0``.
* Equirectangular image ``W x H`` (``W = 2H``); continuous image coordinates ``(u, v)`` with pixel ``(i, j)``
  covering ``[i, i+1) x [j, j+1)``:  azimuth ``α = 2π (0.5 - u/W)`` (0 forward, positive left), elevation
  ``ε = π (0.5 - v/H)``; direction ``d = (cos ε cos α, cos ε sin α, sin ε)``.

Every function is vectorised: angles, matrices, quaternions and points may carry any leading batch shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

__all__ = [
    "Pose",
    "angles_from_quaternion",
    "angles_from_rotation",
    "direction_from_pixel",
    "pixel_centre_directions",
    "pixel_from_direction",
    "project_points",
    "quaternion_from_angles",
    "quaternion_from_rotation",
    "rotation_from_angles",
    "rotation_from_quaternion",
]

FloatArray = NDArray[np.float64]


# --- orientations ---------------------------------------------------------------------------------------------


def _as_rotation(matrices: FloatArray) -> tuple[Rotation, tuple[int, ...]]:
    m = np.asarray(matrices, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3), got {m.shape}")
    batch = m.shape[:-2]
    return Rotation.from_matrix(m.reshape(-1, 3, 3)), batch


def rotation_from_angles(heading: ArrayLike, pitch: ArrayLike, roll: ArrayLike) -> FloatArray:
    """world_from_body rotation matrices ``(..., 3, 3)`` from heading, pitch, roll in degrees.

    ``R = Rz(90° - heading) · Ry(-pitch) · Rx(roll)`` (intrinsic z-y-x). Inputs broadcast against each other.
    """
    h, p, r = np.broadcast_arrays(
        np.asarray(heading, dtype=np.float64), np.asarray(pitch, dtype=np.float64), np.asarray(roll, dtype=np.float64)
    )
    psi, theta, phi = np.radians(90.0 - h), np.radians(-p), np.radians(r)
    cz, sz, cy, sy, cx, sx = np.cos(psi), np.sin(psi), np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)
    # closed form of Rz(psi) @ Ry(theta) @ Rx(phi)
    m = np.empty((*h.shape, 3, 3))
    m[..., 0, 0] = cz * cy
    m[..., 0, 1] = cz * sy * sx - sz * cx
    m[..., 0, 2] = cz * sy * cx + sz * sx
    m[..., 1, 0] = sz * cy
    m[..., 1, 1] = sz * sy * sx + cz * cx
    m[..., 1, 2] = sz * sy * cx - cz * sx
    m[..., 2, 0] = -sy
    m[..., 2, 1] = cy * sx
    m[..., 2, 2] = cy * cx
    return m


def angles_from_rotation(matrices: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Heading in [0, 360), pitch in [-90, 90] and roll in (-180, 180] degrees from world_from_body matrices.

    At pitch = ±90° (gimbal lock) heading and roll are not separable; scipy puts the whole turn into heading.
    """
    rot, batch = _as_rotation(np.asarray(matrices))
    return _angles_from(rot, batch)


def _angles_from(rot: Rotation, batch: tuple[int, ...]) -> tuple[FloatArray, FloatArray, FloatArray]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gimbal lock notice; the result is still a valid decomposition
        euler = rot.as_euler("ZYX", degrees=True).reshape(-1, 3)
    heading = np.mod(90.0 - euler[:, 0], 360.0)
    heading = np.where(heading >= 360.0, heading - 360.0, heading)
    pitch = -euler[:, 1]
    roll = euler[:, 2]
    roll = np.where(roll <= -180.0, roll + 360.0, roll)
    return heading.reshape(batch), pitch.reshape(batch), roll.reshape(batch)


def quaternion_from_rotation(matrices: ArrayLike) -> FloatArray:
    """Unit quaternions ``(..., 4)`` as ``(w, x, y, z)`` with ``w >= 0`` from rotation matrices ``(..., 3, 3)``."""
    rot, batch = _as_rotation(np.asarray(matrices))
    return _canonical_quaternion(rot).reshape(*batch, 4)


def _canonical_quaternion(rot: Rotation) -> FloatArray:
    q = rot.as_quat(scalar_first=True).reshape(-1, 4)
    return np.where(q[:, :1] < 0.0, -q, q)


def rotation_from_quaternion(quaternions: ArrayLike) -> FloatArray:
    """Rotation matrices ``(..., 3, 3)`` from quaternions ``(..., 4)`` ``(w, x, y, z)`` (normalised first)."""
    q = np.asarray(quaternions, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternions must have shape (..., 4), got {q.shape}")
    batch = q.shape[:-1]
    rot = Rotation.from_quat(q.reshape(-1, 4), scalar_first=True)
    return rot.as_matrix().reshape(*batch, 3, 3)


def quaternion_from_angles(heading: ArrayLike, pitch: ArrayLike, roll: ArrayLike) -> FloatArray:
    """Quaternions ``(..., 4)`` ``(w, x, y, z)``, ``w >= 0``, from heading, pitch, roll in degrees."""
    return quaternion_from_rotation(rotation_from_angles(heading, pitch, roll))


def angles_from_quaternion(quaternions: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Heading, pitch, roll in degrees from quaternions ``(..., 4)`` ``(w, x, y, z)``."""
    return angles_from_rotation(rotation_from_quaternion(quaternions))


# --- equirectangular mapping ------------------------------------------------------------------------------------


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width != 2 * height:
        raise ValueError(f"an equirectangular image must be W x H with W = 2H > 0, got {width} x {height}")


def direction_from_pixel(u: ArrayLike, v: ArrayLike, width: int, height: int) -> FloatArray:
    """Unit directions ``(..., 3)`` in the camera frame for continuous image coordinates ``(u, v)``.

    A pixel ``(i, j)``'s centre is ``(i + 0.5, j + 0.5)``; ``u`` may lie outside ``[0, W)`` (it wraps).
    """
    _check_size(width, height)
    u_arr, v_arr = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
    azimuth = 2.0 * np.pi * (0.5 - u_arr / width)
    elevation = np.pi * (0.5 - v_arr / height)
    cos_e = np.cos(elevation)
    return np.stack([cos_e * np.cos(azimuth), cos_e * np.sin(azimuth), np.sin(elevation)], axis=-1)


def pixel_from_direction(directions: ArrayLike, width: int, height: int) -> tuple[FloatArray, FloatArray]:
    """Continuous image coordinates ``(u, v)`` of camera-frame directions ``(..., 3)`` (need not be unit).

    ``u`` lies in ``[0, W)`` and ``v`` in ``[0, H]``; ``floor`` of them gives the pixel column and row. The zero
    vector maps to the image centre.
    """
    _check_size(width, height)
    d = np.asarray(directions, dtype=np.float64)
    if d.shape[-1] != 3:
        raise ValueError(f"directions must have shape (..., 3), got {d.shape}")
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    azimuth = np.arctan2(y, x)
    elevation = np.arctan2(z, np.hypot(x, y))
    u = np.mod(width * (0.5 - azimuth / (2.0 * np.pi)), width)
    u = np.where(u >= width, 0.0, u)  # np.mod can round up to exactly W
    v = height * (0.5 - elevation / np.pi)
    return u, v


def pixel_centre_directions(width: int, height: int, rows: slice | None = None) -> FloatArray:
    """Camera-frame unit directions of every pixel centre, shape ``(rows, W, 3)`` (all rows by default)."""
    _check_size(width, height)
    row_index = np.arange(height)[rows if rows is not None else slice(None)]
    v, u = np.meshgrid(row_index + 0.5, np.arange(width) + 0.5, indexing="ij")
    return direction_from_pixel(u, v, width, height)


# --- poses and projection ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """A camera pose in the world frame: ``position`` (3,) in metres and ``quaternion`` (w, x, y, z) world_from_body."""

    position: FloatArray
    quaternion: FloatArray

    @classmethod
    def from_angles(cls, position: ArrayLike, heading: float, pitch: float, roll: float) -> Pose:
        """A pose from a position and heading, pitch, roll in degrees."""
        return cls(np.asarray(position, dtype=np.float64).reshape(3), quaternion_from_angles(heading, pitch, roll))

    @property
    def rotation(self) -> FloatArray:
        """world_from_body rotation matrix (3, 3)."""
        return rotation_from_quaternion(self.quaternion)

    @property
    def angles(self) -> tuple[float, float, float]:
        """(heading, pitch, roll) in degrees."""
        h, p, r = angles_from_quaternion(self.quaternion)
        return float(h), float(p), float(r)

    def to_camera(self, points: ArrayLike) -> FloatArray:
        """World points ``(..., 3)`` expressed in the camera (body) frame."""
        pts = np.asarray(points, dtype=np.float64)
        return (pts - self.position) @ self.rotation  # row vectors: (R^T (p - c))^T = (p - c)^T R

    def to_world(self, points: ArrayLike) -> FloatArray:
        """Camera-frame points or directions ``(..., 3)`` expressed in the world frame (points get the offset)."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T + self.position


def project_points(
    points: ArrayLike, pose: Pose, width: int, height: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Project world points ``(..., 3)`` into an equirectangular panorama taken at ``pose``.

    Returns continuous image coordinates ``(u, v)`` and the distance from the camera centre (metres).
    ``np.floor(u), np.floor(v)`` are the pixel column and row.
    """
    local = pose.to_camera(points)
    u, v = pixel_from_direction(local, width, height)
    return u, v, np.linalg.norm(local, axis=-1)
