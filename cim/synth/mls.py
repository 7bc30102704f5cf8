"""Mobile laser scanning from the mapping vehicle: rotating profilers with real occlusion.

Each scanner spins in a vertical plane; with two scanners the planes are turned ±45° from across-track (an "X",
as on common mobile-mapping systems), so façades are seen from two directions. The scanners share one pulse
clock; the points come out in time order (scanner 1 before scanner 2 at the same instant). Pulses are cast from
the true pose of each instant; the points are then georeferenced with the *measured* pose, so the GNSS/INS error
of the trajectory moves them as it does in real data. Colours are the scene's true albedo (RGB truth).

The vehicle's kinematics are tabulated at 1 kHz (scanner origins, spin-plane axes in the world, the measured
pose's offset and small rotation) and interpolated linearly per pulse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from cim.synth.raycast import Caster, simulate_returns
from cim.synth.scene import Scene
from cim.synth.trajectory import Trajectory

_CHUNK = 400_000
TABLE_STEP = 0.001  # s
#: scanner mounting in the body frame (FLU, metres from the camera centre) and yaw of the spin axis (deg)
X_SCANNERS = [((-0.8, 0.45, -0.4), 45.0), ((-0.8, -0.45, -0.4), -45.0)]
SINGLE_SCANNER = [((-0.8, 0.0, -0.4), 0.0)]


def scanner_mounts(count: int) -> list[tuple[tuple[float, float, float], float]]:
    """Lever arms and spin-axis yaws of ``count`` scanners (2: the X; 1: one across-track profiler)."""
    return X_SCANNERS if count == 2 else SINGLE_SCANNER


@dataclass
class _Kinematics:
    """Per-time tables (1 kHz): camera centre, world up of the body, per scanner origin offset and spin side
    axis, and the measured pose's position offset and small rotation (rotation vector, world frame)."""

    centre: np.ndarray  # (n_t, 3)
    up: np.ndarray  # (n_t, 3)
    lever: np.ndarray  # (n_sc, n_t, 3)
    side: np.ndarray  # (n_sc, n_t, 3)
    offset: np.ndarray  # (n_t, 3)
    rotvec: np.ndarray  # (n_t, 3)

    @classmethod
    def tabulate(cls, drive: Trajectory, mounts: list[tuple[tuple[float, float, float], float]]) -> _Kinematics:
        t = np.arange(0.0, drive.duration + 2 * TABLE_STEP, TABLE_STEP)
        pos, h, p, r = drive.true_pose(t)
        rot = drive.rotation(h, p, r)
        mpos, mh, mp, mr = drive.measured_pose(t)
        mrot = drive.rotation(mh, mp, mr)
        levers, sides = [], []
        for lever, yaw in mounts:
            axis_side = np.array([-np.sin(np.radians(yaw)), np.cos(np.radians(yaw)), 0.0])
            levers.append(rot @ np.asarray(lever, dtype=np.float64))
            sides.append(rot @ axis_side)
        delta = Rotation.from_matrix(mrot @ np.transpose(rot, (0, 2, 1))).as_rotvec()
        return cls(pos, rot[:, :, 2], np.stack(levers), np.stack(sides), mpos - pos, delta)

    @staticmethod
    def _lerp(table: np.ndarray, i0: np.ndarray, w: np.ndarray) -> np.ndarray:
        return table[i0] * (1.0 - w)[:, None] + table[i0 + 1] * w[:, None]

    def at(self, t: np.ndarray, scanner: np.ndarray) -> dict[str, np.ndarray]:
        f = t / TABLE_STEP
        i0 = np.minimum(f.astype(np.int64), len(self.centre) - 2)
        w = f - i0
        lerp = self._lerp
        lever = self.lever[scanner, i0] * (1 - w)[:, None] + self.lever[scanner, i0 + 1] * w[:, None]
        side = self.side[scanner, i0] * (1 - w)[:, None] + self.side[scanner, i0 + 1] * w[:, None]
        return {"centre": lerp(self.centre, i0, w), "up": lerp(self.up, i0, w), "lever": lever, "side": side,
                "offset": lerp(self.offset, i0, w), "rotvec": lerp(self.rotvec, i0, w)}


def simulate_mls(scene: Scene, caster: Caster, drive: Trajectory, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """MLS points (world x, y, z and LAS attributes, in time order) of the whole drive."""
    c = scene.config
    mounts = scanner_mounts(c.mls_scanners)
    n_sc = len(mounts)
    kin = _Kinematics.tabulate(drive, mounts)
    phase0 = rng.uniform(0, 2 * np.pi, n_sc)
    n_pulses = int(drive.duration * c.mls_pulse_rate) * n_sc
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_pulses, _CHUNK):
        pulse = np.arange(start, min(start + _CHUNK, n_pulses))
        scanner = pulse % n_sc
        t = (pulse // n_sc + 0.5) / c.mls_pulse_rate  # the scanners fire together (shared clock)
        angle = np.mod(2 * np.pi * c.mls_line_rate * t + phase0[scanner] + np.pi, 2 * np.pi) - np.pi  # 0 = up
        k = kin.at(t, scanner)
        origins = k["centre"] + k["lever"]
        dirs = np.cos(angle)[:, None] * k["up"] + np.sin(angle)[:, None] * k["side"]
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        part, aux = simulate_returns(scene, caster, origins, dirs, rng, 10.0, c.mls_range_noise,
                                     c.mls_outlier_fraction, max_range=c.mls_max_range)
        idx = aux["pulse"]
        # georeference with the measured pose: p' = p + (c' - c) + delta x (p - c)  (delta: ~1e-4 rad)
        p = np.column_stack([part["x"], part["y"], part["z"]])
        p = p + k["offset"][idx] + np.cross(k["rotvec"][idx], p - k["centre"][idx])
        part["x"], part["y"], part["z"] = p[:, 0], p[:, 1], p[:, 2]
        part["gps_time"] = c.mls_gps_start + t[idx]
        part["scan_angle"] = np.degrees(angle[idx]).astype(np.float32)
        part["point_source_id"] = (scanner[idx] + 1).astype(np.uint16)
        if c.point_ids:
            part["object_id"] = aux["object_id"]
        rgb = np.clip(np.round(aux["albedo"] * 65535.0), 0, 65535).astype(np.uint16)
        part["red"], part["green"], part["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        parts.append(part)
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    out["x"] += scene.origin[0]
    out["y"] += scene.origin[1]
    out["z"] += scene.origin[2]
    return out
