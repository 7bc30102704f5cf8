"""Generate the synthetic city and its simulated sensor data into a folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cim import crs as crs_mod
from cim.synth import outputs
from cim.synth.als import flight_plan, simulate_als
from cim.synth.config import SynthConfig
from cim.synth.layout import build_scene
from cim.synth.raycast import Caster
from cim.synth.scene import Scene

log = logging.getLogger("cim.synth")

CONVENTIONS = {
    "document": "docs/conventions.md",
    "world_frame": "output CRS as east-north-up (x east, y north, z up)",
    "body_frame": "FLU: x forward, y left, z up; a panorama's camera frame is its body frame",
    "rotation": "world_from_body = Rz(90 - heading) * Ry(-pitch) * Rx(roll), degrees, intrinsic z-y-x",
    "heading": "clockwise from north; 0 = north, 90 = east",
    "pitch": "positive nose up",
    "roll": "positive right side down",
    "equirectangular": "azimuth = 2*pi*(0.5 - u/W) (0 forward, positive left); elevation = pi*(0.5 - v/H); "
                       "pixel (i, j) covers [i, i+1) x [j, j+1)",
    "time": "GPS seconds since 1980-01-06 (no leap seconds)",
}


@dataclass
class SyntheticCity:
    """What :func:`generate` made: the in-memory truth ``scene`` and the paths of the files it wrote.

    A path is None when its product was switched off in the config.
    """

    out_dir: Path
    config: SynthConfig
    scene: Scene
    als_laz: Path | None = None
    mls_laz: Path | None = None
    buildings_cityjson: Path | None = None
    footprints_gpkg: Path | None = None
    dtm_tif: Path | None = None
    panorama_dir: Path | None = None
    poses_csv: Path | None = None
    trajectory_csv: Path | None = None
    trajectory_truth_csv: Path | None = None
    depth_dir: Path | None = None
    truth_json: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def generate(out_dir: str | Path, config: SynthConfig | None = None) -> SyntheticCity:
    """Build the scene of ``config`` and write every product into ``out_dir``; returns a :class:`SyntheticCity`.

    Files (names fixed): ``als.laz``, ``mls.laz``, ``buildings.city.json``, ``footprints.gpkg``, ``dtm.tif``,
    ``panoramas/*.jpg``, ``panoramas/panorama1.csv``, ``trajectory.csv``, ``trajectory_truth.csv``,
    ``depth/*.tif``, ``truth.json``.
    """
    config = config or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crs = crs_mod.resolve(config.crs)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    scene = build_scene(config)
    caster = Caster(scene)
    lap("scene")
    city = SyntheticCity(out, config, scene, timings=timings)
    truth: dict[str, Any] = {
        "generator": "cim.synth", "config": config.to_dict(), "crs": crs.to_wkt(), "crs_name": config.crs,
        "origin": scene.origin.tolist(), "extent": config.extent, "conventions": CONVENTIONS,
        "buildings": outputs.building_truth(scene),
        "roof_type_counts": _counts([b.roof_type for b in scene.buildings]),
        "objects": {"trees": sum(t.trunk_radius > 0 for t in scene.trees),
                    "hedge_elements": sum(t.trunk_radius == 0 for t in scene.trees),
                    "cars": len(scene.cars), "poles": len(scene.poles)},
        "terrain": _terrain_truth(scene),
    }

    city.footprints_gpkg = outputs.write_footprints(out / "footprints.gpkg", scene, crs)
    city.buildings_cityjson = outputs.write_buildings(out / "buildings.city.json", scene, crs)
    city.dtm_tif = outputs.write_dtm(out / "dtm.tif", scene, crs, config.dtm_resolution)
    lap("truth_files")

    if config.als:
        points = simulate_als(scene, caster, np.random.default_rng([config.seed, 2]))
        lap("als_simulate")
        city.als_laz = outputs.write_laz(out / "als.laz", points, crs)
        lap("als_write")
        plan = flight_plan(config, float(scene.terrain_grid[2].mean()))
        truth["als"] = {
            "points": len(points["x"]), "class_counts": outputs.class_counts(points["classification"]),
            "returns": _counts(points["number_of_returns"].tolist()),
            "first_return_density": float(np.sum(points["return_number"] == 1)) / config.extent ** 2,
            "strips": len(np.asarray(plan["centres"])), "swath": plan["swath"], "pulse_rate": plan["pulse_rate"],
            "mirror_frequency": plan["mirror_frequency"], "range_noise": config.als_range_noise,
        }

    truth["files"] = {name: str(p.relative_to(out)) for name, p in _paths(city).items() if p is not None}
    city.truth_json = outputs.write_json(out / "truth.json", truth)
    lap("truth_json")
    log.info("synthetic city in %s: %s", out, timings)
    return city


def _paths(city: SyntheticCity) -> dict[str, Path | None]:
    names = ["als_laz", "mls_laz", "buildings_cityjson", "footprints_gpkg", "dtm_tif", "panorama_dir", "poses_csv",
             "trajectory_csv", "trajectory_truth_csv", "depth_dir"]
    return {n: getattr(city, n) for n in names}


def _counts(values: list[int]) -> dict[str, int]:
    keys, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    return {str(int(k)): int(c) for k, c in zip(keys, counts)}


def _terrain_truth(scene: Scene) -> dict[str, Any]:
    c = scene.config
    ox, oy = scene.origin[0], scene.origin[1]
    return {
        "streets_ew_y": (scene.streets_y + oy).tolist(), "streets_ns_x": (scene.streets_x + ox).tolist(),
        "road_width": c.road_width, "sidewalk_width": c.sidewalk_width, "kerb_height": c.kerb_height,
        "embankment_plateau": None if scene.embankment is None else
        [scene.embankment[0] + ox, scene.embankment[1] + oy, scene.embankment[2] + ox, scene.embankment[3] + oy],
        "embankment_height": c.embankment_height, "embankment_slope": c.embankment_slope,
        "mesh_resolution": c.terrain_resolution,
    }
