"""Mobile laser scanning from the mapping vehicle: rotating profilers with real occlusion.

Each scanner spins in a vertical plane; with two scanners the planes are turned ±45° from across-track (an "X",
as on common mobile-mapping systems), so façades are seen from two directions. Pulses are cast from the true
pose of each instant; the points are then georeferenced with the *measured* pose, so the GNSS/INS error of the
trajectory moves them as it does in real data. Colours are the scene's true albedo (RGB truth).
"""

from __future__ import annotations

import numpy as np

from cim.synth.raycast import Caster, simulate_returns
from cim.synth.scene import CROWN_COLOUR, Scene, hash_noise
from cim.synth.trajectory import Trajectory

_CHUNK = 300_000
#: scanner mounting in the body frame (FLU, metres from the camera centre) and yaw of the spin axis (deg)
X_SCANNERS = [((-0.8, 0.45, -0.4), 45.0), ((-0.8, -0.45, -0.4), -45.0)]
SINGLE_SCANNER = [((-0.8, 0.0, -0.4), 0.0)]


def scanner_mounts(count: int) -> list[tuple[tuple[float, float, float], float]]:
    """Lever arms and spin-axis yaws of ``count`` scanners (2: the X; 1: one across-track profiler)."""
    return X_SCANNERS if count == 2 else SINGLE_SCANNER


def simulate_mls(scene: Scene, caster: Caster, drive: Trajectory, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """MLS points (world x, y, z and LAS attributes, time ordered) of the whole drive."""
    c = scene.config
    n_pulses = int(drive.duration * c.mls_pulse_rate)
    parts: list[dict[str, np.ndarray]] = []
    for k, (lever, yaw) in enumerate(scanner_mounts(c.mls_scanners)):
        axis = np.array([np.cos(np.radians(yaw)), np.sin(np.radians(yaw)), 0.0])
        side = np.array([-axis[1], axis[0], 0.0])
        phase0 = rng.uniform(0, 2 * np.pi)
        for start in range(0, n_pulses, _CHUNK):
            t = (np.arange(start, min(start + _CHUNK, n_pulses)) + 0.5) / c.mls_pulse_rate
            pos, heading, pitch, roll = drive.sample(t)
            rot = drive.rotation(heading, pitch, roll)
            angle = np.mod(2 * np.pi * c.mls_line_rate * t + phase0 + np.pi, 2 * np.pi) - np.pi  # 0 = up
            body = np.cos(angle)[:, None] * np.array([0.0, 0.0, 1.0]) + np.sin(angle)[:, None] * side
            origins = pos + np.einsum("nij,j->ni", rot, np.asarray(lever))
            dirs = np.einsum("nij,nj->ni", rot, body)
            part, aux = simulate_returns(scene, caster, origins, dirs, rng, 10.0, c.mls_range_noise,
                                         c.mls_outlier_fraction, max_range=c.mls_max_range)
            idx = aux["pulse"]
            # georeference with the measured pose: p' = c' + R' R^T (p - c)
            mpos, mh, mp, mr = drive.sample(t[idx], measured=True)
            mrot = drive.rotation(mh, mp, mr)
            p = np.column_stack([part["x"], part["y"], part["z"]])
            body_pts = np.einsum("nji,nj->ni", rot[idx], p - pos[idx])
            p = mpos + np.einsum("nij,nj->ni", mrot, body_pts)
            part["x"], part["y"], part["z"] = p[:, 0], p[:, 1], p[:, 2]
            part["gps_time"] = c.mls_gps_start + t[idx]
            part["scan_angle"] = np.degrees(angle[idx]).astype(np.float32)
            part["point_source_id"] = np.full(len(idx), k + 1, np.uint16)
            rgb = _colours(scene, caster, aux)
            part["red"], part["green"], part["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
            parts.append(part)
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    order = np.argsort(out["gps_time"], kind="stable")
    out = {name: values[order] for name, values in out.items()}
    out["x"] += scene.origin[0]
    out["y"] += scene.origin[1]
    out["z"] += scene.origin[2]
    return out


def _colours(scene: Scene, caster: Caster, aux: dict[str, np.ndarray]) -> np.ndarray:
    """True albedo (u16 RGB) at each return: the surface a pulse hit, foliage green for crown returns."""
    tri = aux["tri"]
    opaque = tri >= 0
    colour = np.empty((len(tri), 3))
    colour[opaque] = scene.surface_albedo(aux["true"][opaque], caster.opaque, tri[opaque])
    foliage = aux["true"][~opaque]
    colour[~opaque] = CROWN_COLOUR * (0.7 + 0.6 * hash_noise(foliage, 2.5))[:, None]
    return np.clip(np.round(colour * 65535.0), 0, 65535).astype(np.uint16)
