"""Accuracy of the panorama chain against an analytic scene (ray-cast truth, no shared data needed).

The scene (Kaiserslautern, EPSG:25832 + DHHN2016): a ground plane, two façades and a pillar standing between the
camera and the north façade, each with a smooth known colour field. The panorama is ray-cast from the truth
pose; the point cloud samples the same surfaces. The pose goes through the production path: written as a
Trimble MX7 row (WGS 84 lat/lon, ellipsoidal height, true-north heading), read, georeferenced back.
"""

from __future__ import annotations

import numpy as np
import pytest

import cim  # noqa: F401  (registers the shipped PROJ grids)
from cim import camera
from cim import crs as cimcrs
from cim.panoramas import colorize_points, depth_buffer, fill_holes, georeference, measure, read_poses
from cim.panoramas.colorize import ColorizeOptions
from cim.panoramas.georef import grid_convergence

JOB_CRS = "EPSG:25832+7837"
X0, Y0, Z0 = 410800.0, 5479700.0, 235.0
CAM = np.array([X0 + 0.3, Y0 - 0.2, Z0 + 2.6])
HPR = (30.0, 2.0, -1.5)  # grid heading, pitch, roll of the truth pose

# surfaces: (name, point on plane, normal axis, bounds on the other two axes)
PLANES = [
    ("ground", 2, Z0, (X0 - 25, X0 + 25), (Y0 - 25, Y0 + 25)),
    ("north", 1, Y0 + 12, (X0 - 25, X0 + 25), (Z0, Z0 + 12)),
    ("east", 0, X0 + 10, (Y0 - 25, Y0 + 12), (Z0, Z0 + 12)),
]
PILLAR = (X0 - 1.0, X0 + 1.0, Y0 + 5.0, Y0 + 6.0, Z0, Z0 + 6.0)


def truth_colour(p: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Smooth RGB colour fields, one per surface (0 ground, 1 north, 2 east, 3 pillar)."""
    x, y, z = p[:, 0] - X0, p[:, 1] - Y0, p[:, 2] - Z0
    a = np.where(surface == 0, x, np.where(surface == 1, x, y))
    b = np.where(surface == 0, y, z)
    r = 128 + 90 * np.sin(a / 2.3)
    g = 128 + 90 * np.cos(b / 1.9)
    bl = np.select([surface == 0, surface == 1, surface == 2], [60.0, 200.0, 120.0], 30.0)
    rgb = np.column_stack([r, g, bl])
    rgb[surface == 3] = (220, 30, 30)
    return rgb


def raycast(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along unit world directions to the nearest surface, and the surface index (-1: sky)."""
    best = np.full(len(dirs), np.inf)
    surf = np.full(len(dirs), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, (_, axis, value, r1, r2) in enumerate(PLANES):
            t = (value - origin[axis]) / dirs[:, axis]
            p = origin + t[:, None] * dirs
            o = [i for i in range(3) if i != axis]
            ok = (t > 0) & (p[:, o[0]] >= r1[0]) & (p[:, o[0]] <= r1[1]) & (p[:, o[1]] >= r2[0]) & (p[:, o[1]] <= r2[1])
            better = ok & (t < best)
            best[better], surf[better] = t[better], k
        lo = np.array(PILLAR[0::2])
        hi = np.array(PILLAR[1::2])
        t1 = (lo - origin) / dirs
        t2 = (hi - origin) / dirs
        tnear = np.nanmax(np.minimum(t1, t2), axis=1)
        tfar = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (tnear <= tfar) & (tnear > 0) & (tnear < best)
        best[hit], surf[hit] = tnear[hit], 3
    return best, surf


def clearly_occluded(pts: np.ndarray, margin_px: float, width: int = 2048, margin_m: float = 0.3) -> np.ndarray:
    """Points hidden behind another surface along their ray and along rays ``margin_px`` pixels around it.

    Points at the very rim of an occluder (within a pixel or two) are ambiguous for any image-based test.
    """
    d = pts - CAM
    r = np.linalg.norm(d, axis=1)
    d = d / r[:, None]
    helper = np.where(np.abs(d[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    step = margin_px * 2 * np.pi / width
    hidden = np.ones(len(pts), dtype=bool)
    for a, b in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        ray = d + step * (a * e1 + b * e2)
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        t, _ = raycast(CAM, ray)
        hidden &= t < r - margin_m
    return hidden


def render(pose: camera.Pose, width: int) -> np.ndarray:
    """BGR equirectangular image of the scene."""
    height = width // 2
    d_cam = camera.pixel_centre_directions(width, height).reshape(-1, 3)
    d_world = d_cam @ pose.rotation.T
    t, surf = raycast(pose.position, d_world)
    p = pose.position + t[:, None] * d_world
    rgb = np.full((len(t), 3), (200.0, 220.0, 255.0))
    hit = surf >= 0
    rgb[hit] = truth_colour(p[hit], surf[hit])
    return np.clip(np.round(rgb[:, ::-1]), 0, 255).astype(np.uint8).reshape(height, width, 3)


def scene_points(spacing: float = 0.12, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Jittered points on every surface (pillar included) and their surface index."""
    rng = np.random.default_rng(seed)
    pts, surf = [], []
    for k, (_, axis, value, r1, r2) in enumerate(PLANES):
        a, b = np.meshgrid(np.arange(*r1, spacing), np.arange(*r2, spacing), indexing="ij")
        a = a.ravel() + rng.uniform(0, spacing, a.size)
        b = b.ravel() + rng.uniform(0, spacing, b.size)
        p = np.empty((a.size, 3))
        o = [i for i in range(3) if i != axis]
        p[:, axis], p[:, o[0]], p[:, o[1]] = value, a, b
        keep = np.linalg.norm(p - CAM, axis=1) < 30  # what a mobile scanner near the camera records
        pts.append(p[keep])
        surf.append(np.full(keep.sum(), k))
    x0, x1, y0, y1, z0, z1 = PILLAR
    for axis, value in ((1, y0), (0, x0), (0, x1), (1, y1)):
        o = [i for i in range(3) if i != axis]
        ra = (x0, x1) if o[0] == 0 else (y0, y1)
        a, b = np.meshgrid(np.arange(*ra, spacing / 2), np.arange(z0, z1, spacing / 2), indexing="ij")
        p = np.empty((a.size, 3))
        p[:, axis], p[:, o[0]], p[:, o[1]] = value, a.ravel(), b.ravel()
        pts.append(p)
        surf.append(np.full(a.size, 3))
    return np.concatenate(pts), np.concatenate(surf)


def write_mx7(path, name: str, gps_time: float, pose_grid: tuple[float, float, float]) -> None:
    """A Trimble MX7 panorama1.csv row for the truth camera (WGS 84, true-north heading)."""
    crs = cimcrs.resolve(JOB_CRS)
    lon, lat, h = cimcrs.to_geographic3d(crs).transform(*CAM)
    heading_true = pose_grid[0] - float(grid_convergence(crs, lon, lat)[0])
    header = "gps_seconds[s]\tpanorama_file_name\tlatitude[deg]\tlongitude[deg]\taltitude_ellipsoidal[m]\t" \
             "roll[deg]\tpitch[deg]\theading[deg]\n"
    row = f"{gps_time:.5f}\t{name}\t{lat:.12f}\t{lon:.12f}\t{h:.5f}\t{pose_grid[2]:.9f}\t{pose_grid[1]:.9f}\t" \
          f"{heading_true:.9f}\n"
    path.write_text(header + row)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pano_scene")
    truth = camera.Pose.from_angles(CAM, *HPR)
    write_mx7(folder / "panorama1.csv", "scene_0001", 1_450_000_000.0, HPR)
    pano = georeference(read_poses(folder / "panorama1.csv"), JOB_CRS)[0]
    image = render(truth, 2048)
    pts, surf = scene_points()
    return {"truth": truth, "pano": pano, "image": image, "points": pts, "surface": surf, "folder": folder}


def test_georeferenced_pose_projects_truth_points_within_a_pixel(scene):
    """Truth points projected through the ingested + georeferenced pose land within 1 px at 2048x1024."""
    pano, truth = scene["pano"], scene["truth"]
    assert np.linalg.norm(np.asarray(pano.position) - CAM) < 1e-3  # DHHN2016 <-> ellipsoidal round trip, mm
    pts = scene["points"][:: 50]
    u0, v0, r = camera.project_points(pts, truth, 2048, 1024)
    u1, v1, _ = camera.project_points(pts, pano.pose, 2048, 1024)
    du = np.abs((u1 - u0 + 1024) % 2048 - 1024)
    err = np.hypot(du, v1 - v0)
    assert err.max() < 1.0, f"max reprojection error {err.max():.3f} px"
    assert err.mean() < 0.05


def test_colorize_matches_truth_and_respects_occlusion(scene):
    pts, surf, pano = scene["points"], scene["surface"], scene["pano"]
    rgb, source, dist = colorize_points(pts, [pano], lambda p: scene["image"], ColorizeOptions(max_range=30.0))
    # visibility truth: a ray from the camera to the point meets nothing closer
    d = pts - CAM
    r = np.linalg.norm(d, axis=1)
    t, hit_surface = raycast(CAM, d / r[:, None])
    truly_visible = (t >= r - 0.02) & (r > 1.0) & (r <= 30.0)
    occluded = clearly_occluded(pts, margin_px=2.0, margin_m=1.0) & (r <= 30.0)
    coloured = source >= 0
    err = np.abs(rgb.astype(float) - truth_colour(pts, surf)).max(axis=1)
    ok = coloured & truly_visible & (err <= 12)
    share = ok.sum() / truly_visible.sum()
    assert share >= 0.95, f"only {share:.3f} of visible points coloured within 12 levels"
    behind_pillar = occluded & (surf == 1)
    assert behind_pillar.sum() > 500  # the test scene really has an occluded patch
    leaked = coloured & occluded
    # measured: < 0.02 % (0.2 % before the front surface was closed between the pillar's points)
    assert leaked.sum() / occluded.sum() < 0.002, f"{leaked.sum()} of {occluded.sum()} occluded points coloured"


def test_measure_error_below_5cm_at_10m(scene, tmp_path):
    pano = scene["pano"]
    from cim.panoramas import read_depth, write_depth_cog

    depth = fill_holes(depth_buffer(scene["points"], pano.pose, 2048, max_range=60.0), 2)
    write_depth_cog(tmp_path / "depth.tif", depth, max_depth=60.0)
    depth = read_depth(tmp_path / "depth.tif")
    rng = np.random.default_rng(3)
    errors, ranges = [], []
    for _ in range(200):
        u, v = rng.uniform(0, 2048), rng.uniform(400, 700)
        ray = pano.pose.rotation @ camera.direction_from_pixel(u, v, 2048, 1024)
        t, s = raycast(CAM, ray[None, :])
        if s[0] < 0 or not (5.0 < t[0] < 15.0):
            continue
        truth_point = CAM + t[0] * ray
        try:
            got = measure(pano, u, v, depth=depth)
        except cim.InputError:
            continue
        errors.append(np.linalg.norm(got - truth_point))
        ranges.append(t[0])
    errors = np.array(errors)
    assert len(errors) > 50
    # edges of the pillar are legitimately ambiguous within a pixel: judge the 95th percentile and the median
    # (measured 0.7 cm and 0.13 cm; 2.5 cm and < 1 cm with the 7x7 plane and the one-sided hole fill)
    assert np.percentile(errors, 95) <= 0.02, f"p95 error {np.percentile(errors, 95):.3f} m"
    assert np.median(errors) <= 0.005
