"""Generate the synthetic city and its simulated sensor data into a folder."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cim import crs as crs_mod
from cim.errors import CimError, ConfigError
from cim.fileutil import atomic_dir
from cim.synth import outputs
from cim.synth.als import flight_plan, simulate_als, strip_offsets
from cim.synth.config import SynthConfig
from cim import camera
from cim.synth import panoramas, poses
from cim.synth.layout import build_scene
from cim.synth.mls import scanner_mounts, simulate_mls
from cim.synth.raycast import Caster
from cim.synth.scene import Scene
from cim.synth.trajectory import Trajectory, plan_drive

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
    crs = _check_crs(config.crs)  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
        city.als_laz = outputs.write_laz(out / "als.laz", points, crs, config.als_gps_start)
        lap("als_write")
        plan = flight_plan(config, float(scene.terrain_grid[2].mean()))
        truth["als"] = {
            "points": len(points["x"]), "class_counts": outputs.class_counts(points["classification"]),
            "returns": _counts(points["number_of_returns"].tolist()),
            "first_return_density": float(np.sum(points["return_number"] == 1)) / config.extent ** 2,
            "strips": len(np.asarray(plan["centres"])), "swath": plan["swath"], "pulse_rate": plan["pulse_rate"],
            "mirror_frequency": plan["mirror_frequency"], "range_noise": config.als_range_noise,
            "strip_offsets": strip_offsets(config),
        }

    if config.mls:
        truth.update(_drive(city, caster, crs, lap))

    _remove_stale(out, city)
    truth["files"] = {name: str(p.relative_to(out)) for name, p in _paths(city).items() if p is not None}
    city.truth_json = outputs.write_json(out / "truth.json", truth)
    lap("truth_json")
    log.info("synthetic city in %s: %s", out, timings)
    return city


def _drive(city: SyntheticCity, caster: Caster, crs: Any, lap: Any) -> dict[str, Any]:
    """Trajectory files, MLS points and panoramas of the drive; returns their truth records."""
    config, scene, out = city.config, city.scene, city.out_dir
    drive = plan_drive(scene, np.random.default_rng([config.seed, 3]))
    origin = scene.origin
    t = np.arange(0.0, drive.duration, 1.0 / config.trajectory_rate)
    gps = config.mls_gps_start + t
    mpos, mh, mp, mr = drive.measured_pose(t)
    rms = (config.gnss_sigma_xy, config.gnss_sigma_xy, config.gnss_sigma_z, config.attitude_sigma,
           config.attitude_sigma, 2 * config.attitude_sigma)
    city.trajectory_csv = poses.write_trajectory_csv(out / "trajectory.csv", gps, mpos + origin, rms, crs)
    tpos, th, tp, tr = drive.true_pose(t)
    city.trajectory_truth_csv = poses.write_truth_trajectory_csv(out / "trajectory_truth.csv", gps, tpos + origin,
                                                                 th, tp, tr)
    lap("trajectory")
    record: dict[str, Any] = {"drive": {
        "length": drive.length, "duration": drive.duration, "trajectory_rate": config.trajectory_rate,
        "samples": len(t), "gnss_sigma_xy": config.gnss_sigma_xy, "gnss_sigma_z": config.gnss_sigma_z,
        "attitude_sigma": config.attitude_sigma, "sensor_height": config.sensor_height,
        "trajectory_csv": "measured pose (with the GNSS/INS error), MX7 trajectory.csv layout",
        "trajectory_truth_csv": "true pose, projected CRS, grid heading",
    }}
    points = simulate_mls(scene, caster, drive, np.random.default_rng([config.seed, 4]))
    lap("mls_simulate")
    city.mls_laz = outputs.write_laz(out / "mls.laz", points, crs, config.mls_gps_start)
    lap("mls_write")
    record["mls"] = {
        "points": len(points["x"]), "class_counts": outputs.class_counts(points["classification"]),
        "pulse_rate": config.mls_pulse_rate, "line_rate": config.mls_line_rate, "max_range": config.mls_max_range,
        "range_noise": config.mls_range_noise,
        "scanners": [{"lever_arm_flu": list(lever), "spin_axis_yaw_deg": yaw}
                     for lever, yaw in scanner_mounts(config.mls_scanners)],
        "colour": "true surface albedo (linear 0..1 scaled to 0..65535)",
    }
    record["panoramas"] = _panoramas(city, caster, drive, crs)
    lap("panoramas")
    return record


def _panoramas(city: SyntheticCity, caster: Caster, drive: Trajectory, crs: Any) -> dict[str, Any]:
    config, scene, out = city.config, city.scene, city.out_dir
    s = (np.arange(int(drive.length / config.panorama_spacing) + 1) + 0.5) * config.panorama_spacing
    s = s[s < drive.length]
    if config.panorama_count is not None:
        s = s[: config.panorama_count]
    t = drive.time_at(s)
    pos, heading, pitch, roll = drive.true_pose(t)
    written = drive.measured_pose(t) if config.panorama_pose_noise else (pos, heading, pitch, roll)
    names = [f"pano_0001_{k + 1:06d}" for k in range(len(t))]
    pano_dir, depth_dir = out / "panoramas", out / "depth"
    rotations = drive.rotation(heading, pitch, roll)
    gps = config.mls_gps_start + t
    world = written[0] + scene.origin
    # whole folders replace what an earlier run left (no stale images beside a new pose file)
    with atomic_dir(pano_dir) as tmp_pano, atomic_dir(depth_dir) as tmp_depth:
        for k, name in enumerate(names):
            rgb, depth = panoramas.render(scene, caster, pos[k], rotations[k], config.panorama_width,
                                          shadows=config.panorama_shadows)
            panoramas.write_jpeg(tmp_pano / f"{name}.jpg", rgb, config.jpeg_quality)
            panoramas.write_depth(tmp_depth / f"{name}.tif", depth)
        poses.write_panorama_csv(tmp_pano / "panorama1.csv", gps, names, world, written[1], written[2], written[3],
                                 crs)
    city.panorama_dir, city.depth_dir = pano_dir, depth_dir
    city.poses_csv = pano_dir / "panorama1.csv"
    true_world = pos + scene.origin
    true_north = poses.true_from_grid_heading(true_world[:, 0], true_world[:, 1], heading, crs)
    quats = camera.quaternion_from_angles(heading, pitch, roll)
    return {
        "count": len(names), "width": config.panorama_width, "height": config.panorama_height,
        "spacing": config.panorama_spacing, "pose_file": "panoramas/panorama1.csv",
        "pose_file_heading_reference": "true (geographic) north, as the Trimble MX7 writes it; cim's grid heading "
                                       "= the same direction measured from grid north (cim.synth.poses)",
        "pose_file_holds": "measured poses" if config.panorama_pose_noise else "true poses",
        "depth": "depth/<name>.tif: float32 distance from the camera centre (m), NaN where no surface was hit",
        "camera_model": {"type": "equirectangular", "frame": "FLU camera = body frame",
                         "conventions": "docs/conventions.md", "sun_azimuth": panoramas.SUN_AZIMUTH,
                         "sun_elevation": panoramas.SUN_ELEVATION, "shadows": config.panorama_shadows},
        "images": [
            {"name": n, "gps_seconds": g, "x": p[0], "y": p[1], "z": p[2], "heading_grid": h, "heading_true": ht,
             "pitch": pi, "roll": r, "quaternion_wxyz": q.tolist()}
            for n, g, p, h, ht, pi, r, q in zip(names, gps, true_world, heading, true_north, pitch, roll, quats)
        ],
    }


def _check_crs(value: str) -> Any:
    """The output CRS: projected, in metres (the city is laid out in metres)."""
    try:
        crs = crs_mod.resolve(value)
    except CimError as exc:
        raise ConfigError("crs", str(exc)) from None
    horizontal = crs_mod.horizontal_part(crs)
    if not horizontal.is_projected or crs_mod.linear_unit_factor(crs) != 1.0:
        raise ConfigError("crs", f"{value} is not a projected CRS in metres (e.g. EPSG:25832+7837)")
    return crs


def _paths(city: SyntheticCity) -> dict[str, Path | None]:
    names = ["als_laz", "mls_laz", "buildings_cityjson", "footprints_gpkg", "dtm_tif", "panorama_dir", "poses_csv",
             "trajectory_csv", "trajectory_truth_csv", "depth_dir"]
    return {n: getattr(city, n) for n in names}


#: every product name generate() owns inside its output folder
PRODUCTS = ("als.laz", "mls.laz", "buildings.city.json", "footprints.gpkg", "dtm.tif", "panoramas", "trajectory.csv",
            "trajectory_truth.csv", "depth", "truth.json")


def _remove_stale(out: Path, city: SyntheticCity) -> None:
    """Delete products an earlier run wrote that this run (with parts switched off) did not."""
    made = {p.relative_to(out).parts[0] for p in _paths(city).values() if p is not None} | {"truth.json"}
    for name in PRODUCTS:
        path = out / name
        if name not in made and path.exists():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


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
