"""cim.synth mobile mapping: trajectory and pose files, MLS points, panoramas and depth maps against the truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import laspy
import numpy as np
import open3d as o3d
import pyproj
import pytest
import shapely

from cim import camera
from cim.synth import poses
from cim.synth.panoramas import shade, to_srgb8
from cim.synth.raycast import Caster
from tests.helpers import gps_seconds

REPO = Path(__file__).resolve().parents[1]


def _read_poses(city) -> tuple[dict[str, np.ndarray], list[camera.Pose]]:
    """Panorama poses as a user would get them: from panorama1.csv only, converted into the job CRS."""
    crs = pyproj.CRS(city.config.crs)
    table = poses.read_table(city.poses_csv, poses.PANORAMA_COLUMNS)
    lat, lon, h = table["latitude[deg]"], table["longitude[deg]"], table["altitude_ellipsoidal[m]"]
    x, y, z = poses.from_geographic(lon, lat, h, crs)
    heading = poses.grid_from_true_heading(lon, lat, table["heading[deg]"], crs)
    result = [camera.Pose.from_angles([xi, yi, zi], hi, pi, ri)
              for xi, yi, zi, hi, pi, ri in zip(x, y, z, heading, table["pitch[deg]"], table["roll[deg]"])]
    return table, result


def test_pose_files_copy_the_mx7_layout(synth_city, shared_data) -> None:
    amsterdam = shared_data / "panoramas" / "amsterdam"
    for ours, theirs in [(synth_city.poses_csv, amsterdam / "panorama1.csv"),
                         (synth_city.trajectory_csv, amsterdam / "trajectory.csv")]:
        our_header = ours.read_bytes().split(b"\n")[0]
        assert our_header == theirs.read_bytes().split(b"\n")[0]  # same columns, TAB, CRLF
        assert ours.read_bytes().count(b"\r\n") == ours.read_bytes().count(b"\n")
    table = poses.read_table(synth_city.poses_csv, poses.PANORAMA_COLUMNS)
    names = sorted(p.stem for p in synth_city.panorama_dir.glob("*.jpg"))
    assert sorted(table["panorama_file_name"].tolist()) == names
    assert len(names) == synth_city.config.panorama_count
    traj = poses.read_table(synth_city.trajectory_csv, poses.TRAJECTORY_COLUMNS)
    assert np.median(np.diff(traj["gps_seconds[s]"])) <= 0.1  # >= 10 Hz


def test_heading_conversion_matches_meridian_convergence(synth_city) -> None:
    crs = pyproj.CRS(synth_city.config.crs)
    x0, y0 = synth_city.config.origin
    lon, lat = pyproj.Transformer.from_crs(25832, 4326, always_xy=True).transform(x0, y0)
    convergence = pyproj.Proj("EPSG:25832").get_factors(lon, lat).meridian_convergence
    assert -1.0 < convergence < -0.85  # west of the 9°E central meridian: grid north lies west of true north
    for grid in (0.0, 90.0, 213.0):
        true = poses.true_from_grid_heading(np.array([x0]), np.array([y0]), np.array([grid]), crs)[0]
        assert (true - grid - convergence + 180) % 360 - 180 == pytest.approx(0.0, abs=0.005)
        back = poses.grid_from_true_heading(np.array([lon]), np.array([lat]), np.array([true]), crs)[0]
        assert (back - grid + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-6)


def test_ellipsoidal_heights_use_the_german_quasigeoid() -> None:
    crs = pyproj.CRS("EPSG:25832+7837")
    _, _, h = poses.to_geographic(np.array([410800.0]), np.array([5479700.0]), np.array([235.0]), crs)
    assert h[0] == pytest.approx(283.697, abs=0.002)  # GCG2016 at Kaiserslautern
    x, y, z = poses.from_geographic(*poses.to_geographic(np.array([410800.0, 410900.0]),
                                                         np.array([5479700.0, 5479800.0]),
                                                         np.array([235.0, 240.0]), crs), crs)
    np.testing.assert_allclose(np.column_stack([x, y, z]), [[410800, 5479700, 235], [410900, 5479800, 240]],
                               atol=1e-6)


def test_measured_trajectory_error_matches_the_noise_model(synth_city) -> None:
    crs = pyproj.CRS(synth_city.config.crs)
    measured = poses.read_table(synth_city.trajectory_csv, poses.TRAJECTORY_COLUMNS)
    truth = poses.read_table(synth_city.trajectory_truth_csv, poses.TRUTH_TRAJECTORY_COLUMNS)
    np.testing.assert_array_equal(measured["gps_seconds[s]"], truth["gps_seconds[s]"])
    x, y, z = poses.from_geographic(measured["longitude[deg]"], measured["latitude[deg]"],
                                    measured["altitude_ellipsoidal[m]"], crs)
    dx, dy, dz = x - truth["easting[m]"], y - truth["northing[m]"], z - truth["height[m]"]
    c = synth_city.config
    assert np.sqrt(np.mean(np.hypot(dx, dy) ** 2)) < 3 * c.gnss_sigma_xy * np.sqrt(2)
    assert np.abs(dz).max() < 3 * c.gnss_sigma_z * 1.5
    assert np.abs(dx).max() > 1e-4  # the error is there
    # the vehicle drives on the road: the camera is sensor_height above the terrain
    ground = synth_city.scene.terrain_height(truth["easting[m]"], truth["northing[m]"])
    np.testing.assert_allclose(truth["height[m]"] - ground, c.sensor_height, atol=1e-6)
    assert np.all(np.abs(truth["roll[deg]"]) < 5) and np.all(np.abs(truth["pitch[deg]"]) < 5)


def test_panorama_pixels_show_the_scene_through_the_pose_file(synth_city) -> None:
    """Points on buildings project, through panorama1.csv and cim.camera, to pixels of their colour and depth."""
    scene = synth_city.scene
    caster = Caster(scene)
    mesh = caster.opaque
    w, h = synth_city.config.panorama_width, synth_city.config.panorama_height
    table, pose_list = _read_poses(synth_city)
    rng = np.random.default_rng(0)
    # random points on building walls and roofs (area-weighted triangles)
    tris = np.flatnonzero(mesh.cls == 6)
    v = mesh.vertices[mesh.triangles[tris]]
    area = np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1) / 2
    pick = rng.choice(len(tris), 20000, p=area / area.sum())
    a, b = rng.random((2, 20000))
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    tv = v[pick]
    local = tv[:, 0] + a[:, None] * (tv[:, 1] - tv[:, 0]) + b[:, None] * (tv[:, 2] - tv[:, 0])
    tri = tris[pick]
    world = local + scene.origin
    checked = matched = 0
    checked_wrong = matched_wrong = 0
    for name, pose in zip(table["panorama_file_name"], pose_list):
        img = cv2.cvtColor(cv2.imread(str(synth_city.panorama_dir / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(synth_city.depth_dir / f"{name}.tif"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.float32 and depth.shape == (h, w)
        for wrong, p in [(False, pose), (True, camera.Pose.from_angles(pose.position, pose.angles[0] + 3.0,
                                                                       *pose.angles[1:]))]:
            u, vv, dist = camera.project_points(world, p, w, h)
            col, row = np.floor(u).astype(int), np.floor(vv).astype(int)
            ok = (row >= 1) & (row < h - 1) & (col >= 1) & (col < w - 1) & (dist < 40)
            # visible: the true depth at that pixel is the point's distance (not occluded)
            ok &= np.abs(depth[np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)] - dist) < 0.02 * dist + 0.05
            # away from colour edges: the 3x3 neighbourhood is uniform in the rendered image
            patch = np.stack([img[np.clip(row + dr, 0, h - 1), np.clip(col + dc, 0, w - 1)].astype(int)
                              for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
            ok &= (patch.max(axis=0) - patch.min(axis=0)).max(axis=1) < 12
            view = local[ok] + scene.origin - p.position
            view /= np.linalg.norm(view, axis=1, keepdims=True)
            expected = to_srgb8(scene.surface_albedo(local[ok], mesh, tri[ok])
                                * shade(caster.opaque_normals[tri[ok]], view)[:, None]).astype(int)
            got = img[row[ok], col[ok]].astype(int)
            good = int((np.abs(got - expected).max(axis=1) <= 12).sum())
            if wrong:
                checked_wrong += int(ok.sum())
                matched_wrong += good
            else:
                checked += int(ok.sum())
                matched += good
    assert checked > 300
    assert matched / checked > 0.97
    # a 3 degree heading error is caught: depth or colour no longer agree for most points
    assert checked_wrong < 0.5 * checked or matched_wrong / max(checked_wrong, 1) < 0.9


def test_depth_maps_are_the_true_distances(synth_city) -> None:
    truth = json.loads(synth_city.truth_json.read_text())
    record = truth["panoramas"]["images"][0]
    w, h = synth_city.config.panorama_width, synth_city.config.panorama_height
    depth = cv2.imread(str(synth_city.depth_dir / f"{record['name']}.tif"), cv2.IMREAD_UNCHANGED)
    assert np.isnan(depth[0]).all()  # the top row is sky
    pose = camera.Pose(np.array([record["x"], record["y"], record["z"]]), np.array(record["quaternion_wxyz"]))
    # the nadir pixel looks straight down at the road: depth = sensor height over the (tilted) road
    d = depth[h - 1, w // 2]
    assert d == pytest.approx(synth_city.config.sensor_height, rel=0.02)
    # ground pixels back-project onto the terrain
    rows, cols = np.mgrid[h // 2 + 20: h: 7, 0: w: 7]
    dd = depth[rows, cols]
    dirs = camera.direction_from_pixel(cols + 0.5, rows + 0.5, w, h)
    pts = pose.to_world(dirs * dd[..., None])
    ground = synth_city.scene.terrain_height(pts[..., 0], pts[..., 1])
    near = np.isfinite(dd) & (dd < 15)
    assert np.mean(np.abs(pts[..., 2] - ground)[near] < 0.01) > 0.7  # the rest are cars, poles, trees, walls


def test_mls_laz_attributes_and_classes(synth_city) -> None:
    las = laspy.read(synth_city.mls_laz)
    assert las.header.parse_crs().equals(pyproj.CRS("EPSG:25832+7837"))
    assert {"red", "green", "blue", "gps_time", "scan_angle"} <= set(las.point_format.dimension_names)
    truth = json.loads(synth_city.truth_json.read_text())
    assert len(las.points) == truth["mls"]["points"]
    cls = np.asarray(las.classification)
    assert {1, 2, 6} <= set(np.unique(cls).tolist())
    c = synth_city.config
    gps = gps_seconds(las)
    assert np.all(np.diff(gps) >= 0)
    assert c.mls_gps_start <= gps.min() and gps.max() <= c.mls_gps_start + truth["drive"]["duration"]
    angle = np.asarray(las.scan_angle) * 0.006
    assert angle.min() < -170 and angle.max() > 170
    # RGB truth: road points are dark asphalt (or white marking), building points carry wall/roof colours
    rgb = np.column_stack([las.red, las.green, las.blue]).astype(float) / 65535
    road = (cls == 2) & (rgb.max(axis=1) < 0.3)
    assert road.sum() > 0.2 * (cls == 2).sum()


def test_mls_points_on_true_surfaces_and_occlusion(synth_city) -> None:
    las = laspy.read(synth_city.mls_laz)
    scene = synth_city.scene
    c = synth_city.config
    xyz = np.column_stack([las.x, las.y, las.z])
    cls = np.asarray(las.classification)
    ground = xyz[cls == 2]
    dz = ground[:, 2] - scene.terrain_height(ground[:, 0], ground[:, 1])
    tol = 4 * np.hypot(c.mls_range_noise, c.gnss_sigma_z * 1.7) + 0.01
    assert np.mean(np.abs(dz) < tol) > 0.99
    mesh = scene.building_mesh
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                     o3d.core.Tensor(mesh.triangles.astype(np.uint32)))
    bld = xyz[cls == 6]
    dist = rc.compute_distance(o3d.core.Tensor((bld - scene.origin).astype(np.float32))).numpy()
    assert np.mean(dist < 0.15) > 0.99
    # occlusion is real: no point lies inside a building (below its eaves)
    inside = np.zeros(len(xyz), dtype=bool)
    for b in scene.buildings:
        box = shapely.contains_xy(b.footprint.buffer(-0.3), xyz[:, 0], xyz[:, 1])
        inside |= box & (xyz[:, 2] > b.ground_height + 0.3) & (xyz[:, 2] < b.eave_height - 0.3)
    assert inside.sum() <= int(c.mls_outlier_fraction * len(xyz)) + 5  # only the odd low-noise outlier


def test_laz_files_read_by_cim_info(synth_city) -> None:
    from cim.info import file_info

    for path in (synth_city.als_laz, synth_city.mls_laz):
        info = file_info(path)
        assert info["crs"]["source"] == "wkt"
        assert info["crs"]["horizontal"] and "25832" in json.dumps(info["crs"])
        assert info["crs"]["vertical"] is not None and "7837" in json.dumps(info["crs"])
        assert info["point_count"] == laspy.open(path).header.point_count
        assert info["warnings"] == []


def test_cli_synth_runs(tmp_path: Path) -> None:
    out = tmp_path / "city"
    cmd = [sys.executable, "-m", "cim.cli", "synth", "--out", str(out), "--extent", "70", "--seed", "2",
           "--als-density", "2", "--no-mls", "--set", "embankment_height=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "als.laz").is_file() and (out / "truth.json").is_file()
    bad = subprocess.run([*cmd[:-1], "nonsense=1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "nonsense" in bad.stderr and "Traceback" not in bad.stderr


def test_synth_job_runs_through_the_pipeline(synth_city, tmp_path: Path) -> None:
    """pipelines/synth.toml with the fixture's files: ALS + MLS -> tiles -> LAZ, every point accounted for."""
    import tomllib

    from cim.pipeline.execute import run_job, summarize
    from cim.pipeline.job import parse_job

    document = tomllib.loads((REPO / "pipelines" / "synth.toml").read_text())
    document["job"]["output"] = str(tmp_path / "job")
    document["stages"][0]["files"] = [str(synth_city.als_laz), str(synth_city.mls_laz)]
    summary = summarize(run_job(parse_job(document, REPO / "pipelines" / "synth.toml"), scheduler="threads"))
    assert summary["ok"], summary["failures"]
    total = sum(laspy.open(p).header.point_count for p in (synth_city.als_laz, synth_city.mls_laz))
    assert summary["points"] == total
    written = sum(laspy.open(p).header.point_count for p in (tmp_path / "job" / "las").glob("*.laz"))
    assert written == total


def test_cast_shadows_only_darken(synth_city) -> None:
    from cim.synth.panoramas import render

    scene = synth_city.scene
    caster = Caster(scene)
    record = json.loads(synth_city.truth_json.read_text())["panoramas"]["images"][0]
    position = np.array([record["x"], record["y"], record["z"]]) - scene.origin
    rotation = camera.rotation_from_quaternion(record["quaternion_wxyz"])
    plain, depth = render(scene, caster, position, rotation, 256)
    shadowed, depth2 = render(scene, caster, position, rotation, 256, shadows=True)
    np.testing.assert_array_equal(depth, depth2)
    diff = shadowed.astype(int) - plain.astype(int)
    assert diff.max() <= 0  # a shadow never brightens
    darker = (diff.min(axis=2) < -5).mean()
    assert 0.01 < darker < 0.5  # buildings, cars and trees shade part of the ground
