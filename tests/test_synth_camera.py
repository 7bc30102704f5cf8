"""cim.camera implements docs/conventions.md: checked against hand-derived cases, not against itself."""

from __future__ import annotations

import numpy as np
import pytest

from cim import camera

EAST, NORTH, UP = np.eye(3)


def test_heading_turns_forward_axis_clockwise_from_north() -> None:
    forward = np.array([1.0, 0.0, 0.0])
    for heading, expected in [(0, NORTH), (90, EAST), (180, -NORTH), (270, -EAST)]:
        r = camera.rotation_from_angles(heading, 0, 0)
        np.testing.assert_allclose(r @ forward, expected, atol=1e-12)
    # left (+y body) of a north-facing vehicle is west
    np.testing.assert_allclose(camera.rotation_from_angles(0, 0, 0) @ [0, 1, 0], -EAST, atol=1e-12)


def test_pitch_nose_up_and_roll_right_side_down() -> None:
    r = camera.rotation_from_angles(90, 30, 0)  # facing east, nose up 30 degrees
    np.testing.assert_allclose(r @ [1, 0, 0], [np.cos(np.radians(30)), 0, np.sin(np.radians(30))], atol=1e-12)
    r = camera.rotation_from_angles(90, 0, 20)  # facing east, right side (body -y = south) goes down
    right_world = r @ [0, -1, 0]
    assert right_world[2] < 0 and right_world[1] < 0
    np.testing.assert_allclose(right_world[2], -np.sin(np.radians(20)), atol=1e-12)


def test_angles_round_trip_through_matrices_and_quaternions() -> None:
    rng = np.random.default_rng(1)
    h = rng.uniform(0, 360, 500)
    p = rng.uniform(-89, 89, 500)
    r = rng.uniform(-179, 179, 500)
    q = camera.quaternion_from_angles(h, p, r)
    assert q.shape == (500, 4)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    h2, p2, r2 = camera.angles_from_quaternion(q)
    np.testing.assert_allclose(np.mod(h2 - h + 180, 360) - 180, 0, atol=1e-8)
    np.testing.assert_allclose(p2, p, atol=1e-8)
    np.testing.assert_allclose(r2, r, atol=1e-8)
    mats = camera.rotation_from_angles(h, p, r)
    np.testing.assert_allclose(camera.rotation_from_quaternion(q), mats, atol=1e-12)
    np.testing.assert_allclose(camera.rotation_from_angles(h.reshape(20, 25), 0, 0).shape, (20, 25, 3, 3))


def test_quaternion_of_identity_orientation() -> None:
    # heading 90 (east), level: body axes coincide with ENU axes
    np.testing.assert_allclose(camera.quaternion_from_angles(90, 0, 0), [1, 0, 0, 0], atol=1e-12)


def test_equirectangular_key_pixels() -> None:
    w, h = 2048, 1024
    centre = camera.direction_from_pixel(w / 2, h / 2, w, h)
    np.testing.assert_allclose(centre, [1, 0, 0], atol=1e-12)  # image centre looks forward
    np.testing.assert_allclose(camera.direction_from_pixel(w / 4, h / 2, w, h), [0, 1, 0], atol=1e-12)  # left
    np.testing.assert_allclose(camera.direction_from_pixel(3 * w / 4, h / 2, w, h), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(camera.direction_from_pixel(0, 0, w, h), [0, 0, 1], atol=1e-12)  # top = sky
    np.testing.assert_allclose(camera.direction_from_pixel(0, h / 2, w, h), [-1, 0, 0], atol=1e-12)  # back


def test_pixel_direction_round_trip_and_centres() -> None:
    w, h = 512, 256
    dirs = camera.pixel_centre_directions(w, h)
    assert dirs.shape == (h, w, 3)
    u, v = camera.pixel_from_direction(dirs * 3.5, w, h)  # length does not matter
    jj, ii = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(u, ii + 0.5, atol=1e-9)
    np.testing.assert_allclose(v, jj + 0.5, atol=1e-9)
    part = camera.pixel_centre_directions(w, h, rows=slice(10, 20))
    np.testing.assert_array_equal(part, dirs[10:20])
    with pytest.raises(ValueError):
        camera.direction_from_pixel(0, 0, 300, 200)


def test_project_points_through_a_pose() -> None:
    pose = camera.Pose.from_angles([100.0, 200.0, 10.0], heading=90.0, pitch=0.0, roll=0.0)
    w, h = 2000, 1000
    # a point 10 m east (straight ahead), one 10 m north (to the left), one 10 m up
    pts = np.array([[110.0, 200.0, 10.0], [100.0, 210.0, 10.0], [100.0, 200.0, 20.0]])
    u, v, dist = camera.project_points(pts, pose, w, h)
    np.testing.assert_allclose(dist, 10.0)
    np.testing.assert_allclose([u[0], v[0]], [w / 2, h / 2], atol=1e-9)
    np.testing.assert_allclose([u[1], v[1]], [w / 4, h / 2], atol=1e-9)
    np.testing.assert_allclose(v[2], 0.0, atol=1e-9)
    # heading 0 (north): the northern point is now straight ahead
    pose_n = camera.Pose.from_angles([100.0, 200.0, 10.0], heading=0.0, pitch=0.0, roll=0.0)
    u, v, _ = camera.project_points(pts[1], pose_n, w, h)
    np.testing.assert_allclose([u, v], [w / 2, h / 2], atol=1e-9)
    # pitched up by 10 degrees, a point straight ahead at the horizon appears 10 degrees below the centre
    pose_up = camera.Pose.from_angles([100.0, 200.0, 10.0], heading=90.0, pitch=10.0, roll=0.0)
    _, v, _ = camera.project_points(pts[0], pose_up, w, h)
    np.testing.assert_allclose(v, h / 2 + h * 10.0 / 180.0, atol=1e-9)
    # round trip world -> camera -> world
    np.testing.assert_allclose(pose_up.to_world(pose_up.to_camera(pts)), pts, atol=1e-9)


def test_closed_form_matches_scipy_intrinsic_zyx() -> None:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    h, p, r = rng.uniform(0, 360, 50), rng.uniform(-90, 90, 50), rng.uniform(-180, 180, 50)
    ref = Rotation.from_euler("ZYX", np.column_stack([90 - h, -p, r]), degrees=True).as_matrix()
    np.testing.assert_allclose(camera.rotation_from_angles(h, p, r), ref, atol=1e-12)
