"""Airborne laser scanning: north-south flight strips with an oscillating (zig-zag) mirror.

Pulse rate and mirror frequency follow from the requested density: the strips' pulse rate is chosen so that the
mean density over the block (overlaps included) is ``als_density``, and the mirror frequency so that the spacing
along and across track is equal. The aircraft rolls, pitches and crabs gently; each pulse is one ray.
"""

from __future__ import annotations

import numpy as np

from cim import camera
from cim.synth.config import SynthConfig
from cim.synth.raycast import Caster, simulate_returns
from cim.synth.scene import Scene

_CHUNK = 400_000
_TURN_SECONDS = 90.0  # time between strips
_MARGIN = 5.0  # strips start and end this far outside the block


def flight_plan(config: SynthConfig, mean_ground: float) -> dict[str, float | np.ndarray]:
    """Strip centres (local x), swath, pulse rate and mirror frequency for ``config``."""
    e = config.extent
    half_angle = np.radians(config.als_fov / 2)
    swath = 2 * config.als_altitude * np.tan(half_angle)
    spacing = swath * (1 - config.als_overlap)
    n = max(1, int(np.ceil((e - swath) / spacing + 1e-9)) + 1) if swath < e else 1
    centres = e / 2 + (np.arange(n) - (n - 1) / 2) * spacing
    xs = np.linspace(0, e, 801)
    coverage = (np.abs(xs[:, None] - centres[None, :]) <= swath / 2).sum(axis=1).mean()
    prr = config.als_density * config.als_speed * swath / max(coverage, 1e-9)
    freq = np.sqrt(config.als_speed * prr / swath) / 2
    return {"centres": centres, "swath": swath, "pulse_rate": prr, "mirror_frequency": freq,
            "altitude": mean_ground + config.als_altitude}


def strip_offsets(config: SynthConfig) -> np.ndarray:
    """Per-strip misalignment (n_strips, 3) in metres: Gaussian with ``als_strip_sigma`` (zeros by default).

    Drawn from its own generator so that switching it on changes nothing else in the simulation."""
    n = len(flight_plan(config, 0.0)["centres"])  # type: ignore[arg-type]
    if config.als_strip_sigma == 0:
        return np.zeros((n, 3))
    return np.random.default_rng([config.seed, 5]).normal(0.0, config.als_strip_sigma, (n, 3))


def simulate_als(scene: Scene, caster: Caster, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """ALS returns inside the block: world x, y, z plus LAS attributes (time ordered)."""
    c = scene.config
    e = c.extent
    xs, ys, h = scene.terrain_grid
    plan = flight_plan(c, float(h.mean()))
    prr, freq = float(plan["pulse_rate"]), float(plan["mirror_frequency"])
    half_angle = c.als_fov / 2
    duration = (e + 2 * _MARGIN) / c.als_speed
    per_strip = int(duration * prr)
    parts: list[dict[str, np.ndarray]] = []
    t_strip = c.als_gps_start
    for k, (centre, offset) in enumerate(zip(np.asarray(plan["centres"]), strip_offsets(c))):
        north = k % 2 == 0
        phase = rng.uniform(0, 2 * np.pi, 3)
        for start in range(0, per_strip, _CHUNK):
            t = np.arange(start, min(start + _CHUNK, per_strip)) / prr
            y = (-_MARGIN + c.als_speed * t) if north else (e + _MARGIN - c.als_speed * t)
            pos = np.column_stack([np.full(len(t), centre) + 0.8 * np.sin(2 * np.pi * t / 23 + phase[0]), y,
                                   np.full(len(t), float(plan["altitude"]))])
            scan = half_angle * (4 * np.abs(np.mod(freq * t, 1.0) - 0.5) - 1)
            heading = (0.0 if north else 180.0) + 0.8 * np.sin(2 * np.pi * t / 31 + phase[1])
            pitch = 0.3 * np.sin(2 * np.pi * t / 11 + phase[2])
            roll = 0.6 * np.sin(2 * np.pi * t / 7 + phase[0])
            body = np.column_stack([np.zeros(len(t)), -np.sin(np.radians(scan)), -np.cos(np.radians(scan))])
            rot = camera.rotation_from_angles(heading, pitch, roll)
            dirs = np.einsum("nij,nj->ni", rot, body)
            part, aux = simulate_returns(scene, caster, pos, dirs, rng, c.als_altitude, c.als_range_noise,
                                         c.als_outlier_fraction)
            idx = aux["pulse"]
            part["gps_time"] = t_strip + t[idx]
            part["scan_angle"] = scan[idx].astype(np.float32)
            part["point_source_id"] = np.full(len(idx), k + 1, np.uint16)
            if c.point_ids:
                part["object_id"] = aux["object_id"]
            part["x"], part["y"], part["z"] = part["x"] + offset[0], part["y"] + offset[1], part["z"] + offset[2]
            inside = (part["x"] >= 0) & (part["x"] <= e) & (part["y"] >= 0) & (part["y"] <= e)
            parts.append({name: values[inside] for name, values in part.items()})
        t_strip += duration + _TURN_SECONDS
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    out["x"] += scene.origin[0]
    out["y"] += scene.origin[1]
    out["z"] += scene.origin[2]
    return out
