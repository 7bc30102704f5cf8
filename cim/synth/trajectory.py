"""The mapping vehicle's drive: route along the streets, speed profile, true pose and the measured (GNSS/INS) pose.

The vehicle keeps to the right lane, turns at crossings on 6 m arcs, slows to a lateral acceleration of
2 m/s² there (1.5 m/s² braking/acceleration), pitches with the road slope and braking, rolls with the cross slope
and leans out of turns, plus small vibrations. The trajectory reference point is the panorama camera centre,
``sensor_height`` above the road. The measured pose adds a smooth GNSS/INS error (a sum of slow sinusoids with
the configured 1-sigma), as a post-processed trajectory drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cim import camera
from cim.synth.scene import Scene

LANE_OFFSET = 1.5  # m right of the street centreline
TURN_RADIUS = 6.0
LATERAL_ACCEL = 2.0
LONGITUDINAL_ACCEL = 1.5
_STEP = 0.05  # m, resolution of the dense route polyline


def _waypoints(scene: Scene) -> np.ndarray:
    """Serpentine over the east-west streets, joined by the outermost north-south streets (local, centrelines)."""
    e = scene.config.extent
    ys, xs = scene.streets_y, scene.streets_x
    west, east = (xs[0], xs[-1]) if len(xs) > 1 else (5.0, e - 5.0)
    points = [(5.0, ys[0])]
    for k, y in enumerate(ys):
        eastwards = k % 2 == 0
        end = east if eastwards else west
        if k == len(ys) - 1:
            end = e - 5.0 if eastwards else 5.0
        points.append((end, y))
        if k + 1 < len(ys):
            points.append((end, ys[k + 1]))
    return np.array(points, dtype=np.float64)


def _route(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Dense right-lane route (n, 2) with filleted corners, and the turn radius' inverse (curvature) per point."""
    wp = _waypoints(scene)
    seg = np.diff(wp, axis=0)
    dirs = seg / np.linalg.norm(seg, axis=1, keepdims=True)
    right = np.column_stack([dirs[:, 1], -dirs[:, 0]])
    pieces: list[np.ndarray] = []
    curv: list[np.ndarray] = []
    start = wp[0] + right[0] * LANE_OFFSET
    for i in range(len(dirs)):  # a handful of legs
        a = dirs[i]
        if i + 1 < len(dirs):
            b = dirs[i + 1]
            corner = wp[i + 1] + (right[i] + right[i + 1]) * LANE_OFFSET
            p_in = corner - a * TURN_RADIUS
        else:
            p_in = wp[i + 1] + right[i] * LANE_OFFSET
        length = np.linalg.norm(p_in - start)
        s = np.arange(0.0, length, _STEP)
        pieces.append(start + s[:, None] * a)
        curv.append(np.zeros(len(s)))
        if i + 1 < len(dirs):
            centre = p_in + b * TURN_RADIUS
            phi = np.arange(0.0, np.pi / 2, _STEP / TURN_RADIUS)
            pieces.append(centre + TURN_RADIUS * (-np.outer(np.cos(phi), b) + np.outer(np.sin(phi), a)))
            turn = np.sign(a[0] * b[1] - a[1] * b[0])  # +1 left turn
            curv.append(np.full(len(phi), turn / TURN_RADIUS))
            start = corner + b * TURN_RADIUS
        else:
            pieces.append(p_in[None, :])
            curv.append(np.zeros(1))
    return np.vstack(pieces), np.concatenate(curv)


@dataclass
class Trajectory:
    """True and measured vehicle poses as functions of time since the start of the drive (seconds)."""

    scene: Scene
    s: np.ndarray  # dense arc length
    xy: np.ndarray  # dense route points (local)
    curvature: np.ndarray
    time: np.ndarray  # time at each dense point
    speed: np.ndarray
    phases: np.ndarray

    @property
    def duration(self) -> float:
        return float(self.time[-1])

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def time_at(self, s: np.ndarray) -> np.ndarray:
        """Time at arc length ``s``."""
        return np.interp(s, self.s, self.time)

    def true_pose(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(position (n, 3) local, heading, pitch, roll in degrees) of the camera centre at times ``t``."""
        t = np.asarray(t, dtype=np.float64)
        s = np.interp(t, self.time, self.s)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        ds = 0.5
        dx = np.interp(s + ds, self.s, self.xy[:, 0]) - np.interp(s - ds, self.s, self.xy[:, 0])
        dy = np.interp(s + ds, self.s, self.xy[:, 1]) - np.interp(s - ds, self.s, self.xy[:, 1])
        norm = np.maximum(np.hypot(dx, dy), 1e-9)
        fx, fy = dx / norm, dy / norm
        heading = np.mod(np.degrees(np.arctan2(fx, fy)), 360.0)
        h = self.scene.terrain_height_local
        wheelbase, track = 1.4, 0.8
        pitch = np.degrees(np.arctan2(h(x + wheelbase * fx, y + wheelbase * fy) - h(x - wheelbase * fx, y - wheelbase * fy),
                                      2 * wheelbase))
        left_x, left_y = -fy, fx
        roll = np.degrees(np.arctan2(h(x + track * left_x, y + track * left_y) - h(x - track * left_x, y - track * left_y),
                                     2 * track))
        v = np.interp(s, self.s, self.speed)
        accel = np.gradient(self.speed ** 2 / 2, self.s)
        along = np.interp(s, self.s, accel)
        lateral = v * v * np.interp(s, self.s, self.curvature)
        p = self.phases
        pitch = pitch - 0.3 * along + 0.08 * np.sin(2 * np.pi * 2.3 * t + p[0]) + 0.05 * np.sin(2 * np.pi * 0.7 * t + p[1])
        roll = roll + 0.5 * lateral + 0.10 * np.sin(2 * np.pi * 1.7 * t + p[2]) + 0.06 * np.sin(2 * np.pi * 0.4 * t + p[3])
        z = h(x, y) + self.scene.config.sensor_height
        return np.column_stack([x, y, z]), heading, pitch, roll

    def measured_pose(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The true pose plus the smooth GNSS/INS error."""
        c = self.scene.config
        pos, heading, pitch, roll = self.true_pose(t)
        err = [self._drift(t, k) for k in range(6)]
        pos = pos + np.column_stack([c.gnss_sigma_xy * err[0], c.gnss_sigma_xy * err[1], c.gnss_sigma_z * err[2]])
        return (pos, np.mod(heading + 2 * c.attitude_sigma * err[3], 360.0), pitch + c.attitude_sigma * err[4],
                roll + c.attitude_sigma * err[5])

    def _drift(self, t: np.ndarray, k: int) -> np.ndarray:
        """Unit-RMS smooth error: three sinusoids with periods of 37-133 s and random phases."""
        phases = self.phases[4 + 3 * k: 7 + 3 * k]
        periods = np.array([37.0, 71.0, 133.0]) * (1 + 0.1 * k)
        return np.sqrt(2.0 / 3.0) * np.sum(np.sin(2 * np.pi * np.asarray(t)[:, None] / periods + phases), axis=1)

    def rotation(self, heading: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
        """world_from_body matrices (n, 3, 3) (see :mod:`cim.camera`)."""
        return camera.rotation_from_angles(heading, pitch, roll)


def plan_drive(scene: Scene, rng: np.random.Generator) -> Trajectory:
    """The drive of ``scene.config.drive_length`` metres (or the whole route when shorter)."""
    c = scene.config
    xy, curvature = _route(scene)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    keep = s <= c.drive_length
    xy, curvature, s = xy[keep], curvature[keep], s[keep]
    # speed: limited in turns, with bounded acceleration towards and away from them
    v2 = np.full(len(s), c.drive_speed ** 2)
    turning = curvature != 0
    if turning.any():
        turn_s = s[turning]
        limit = LATERAL_ACCEL * TURN_RADIUS
        # distance to the nearest turning point, found by searchsorted (sorted arc lengths)
        idx = np.clip(np.searchsorted(turn_s, s), 1, len(turn_s) - 1) if len(turn_s) > 1 else np.zeros(len(s), int)
        near = np.minimum(np.abs(s - turn_s[idx]), np.abs(s - turn_s[np.maximum(idx - 1, 0)]))
        v2 = np.minimum(v2, limit + 2 * LONGITUDINAL_ACCEL * near)
    # start and stop gently
    v2 = np.minimum(v2, 1.0 + 2 * LONGITUDINAL_ACCEL * s)
    v2 = np.minimum(v2, 1.0 + 2 * LONGITUDINAL_ACCEL * (s[-1] - s))
    speed = np.sqrt(v2)
    dt = np.diff(s) / ((speed[1:] + speed[:-1]) / 2)
    time = np.concatenate([[0.0], np.cumsum(dt)])
    return Trajectory(scene, s, xy, curvature, time, speed, rng.uniform(0, 2 * np.pi, 4 + 3 * 6))
