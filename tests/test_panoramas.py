"""Panoramas: pose ingest, time bases, angle conventions, georeferencing, cube faces, tiles, anonymization."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import cim
from cim import camera
from cim.errors import CrsError, InputError
from cim.panoramas import (
    AnonymizeOptions,
    blur_regions,
    cube_faces,
    georeference,
    read_depth,
    read_gpano,
    read_poses,
    read_trajectory,
    write_depth_cog,
    write_marzipano,
)
from cim.panoramas import timebase
from cim.panoramas.privacy import Region, detect
from cim.panoramas.georef import grid_convergence, load_panoramas, write_index, write_panoramas_json
from cim.panoramas.poses import gpano_quaternion, quaternion_from_convention
from cim.panoramas.projection import CUBE_FACES
from cim.panoramas.stac import write_collection
from cim.panoramas.tiles import PREVIEW_ORDER, default_face_size

# --- time ----------------------------------------------------------------------------------------------------


def test_gps_utc_with_leap_seconds():
    # the Amsterdam sample: GPS 1142842312.86829 is 2016-03-24 08:11:35.868 UTC (17 leap seconds then)
    assert timebase.iso_from_gps(1142842312.86829) == "2016-03-24T08:11:35.868Z"
    assert timebase.gps_from_iso("2016-03-24T08:11:35.868Z") == pytest.approx(1142842312.868, abs=1e-3)
    assert timebase.gps_minus_utc(timebase.GPS_EPOCH_UNIX) == 0
    assert float(timebase.gps_minus_utc(1.7e9)) == 18  # 2023
    # across the 2016-12-31 leap second: one UTC second more than the GPS difference
    a = timebase.gps_from_iso("2016-12-31T23:59:59Z")
    b = timebase.gps_from_iso("2017-01-01T00:00:00Z")
    assert b - a == pytest.approx(2.0)


def test_week_seconds_and_adjusted_gps():
    week = timebase.gps_week_of("2016-03-24")
    assert week == 1889
    sow = 1142842312.86829 - week * timebase.SECONDS_PER_WEEK
    assert float(timebase.to_gps_seconds(sow, "gps_week", week=week)) == pytest.approx(1142842312.86829)
    assert float(timebase.to_gps_seconds(142842312.86829, "gps_adjusted")) == pytest.approx(1142842312.86829)
    with pytest.raises(ValueError):
        timebase.to_gps_seconds(1.0, "gps_week")


# --- angle conventions ---------------------------------------------------------------------------------------


def test_angle_conventions_agree():
    h, p, r = np.array([10.0, 123.6, 359.0]), np.array([1.7, -3.0, 0.0]), np.array([0.2, 5.0, -2.0])
    ref = quaternion_from_convention("hpr", h, p, r)
    np.testing.assert_allclose(quaternion_from_convention("hpr_rad", *np.radians([h, p, r])), ref, atol=1e-12)
    np.testing.assert_allclose(quaternion_from_convention("esri", h, p + 90.0, r), ref, atol=1e-12)
    np.testing.assert_allclose(quaternion_from_convention("yaw_enu", 90.0 - h, p, r), ref, atol=1e-12)
    # heading 90 looks east: the body x axis maps to +x (east)
    east = camera.rotation_from_quaternion(quaternion_from_convention("hpr", 90.0, 0.0, 0.0)[0]) @ [1, 0, 0]
    np.testing.assert_allclose(east, [1, 0, 0], atol=1e-12)
    with pytest.raises(ValueError):
        quaternion_from_convention("opk", 0, 0, 0)


# --- pose files ----------------------------------------------------------------------------------------------


def test_read_mx7_panorama_file(shared_data):
    table = read_poses(shared_data / "panoramas/amsterdam/panorama1.csv")
    assert table.names == ["pano_0001_000529"]
    assert table.north == "true" and table.crs.to_epsg() == 4979
    np.testing.assert_allclose(table.position[0], [4.90430033066768, 52.3683132200505, 46.1533639561385])
    h, p, r = camera.angles_from_quaternion(table.quaternion[0])
    assert (float(h), float(p), float(r)) == pytest.approx((123.647497626591, 1.68609695374089, 0.184327746487245))


def test_amsterdam_georeferenced_in_utm31_with_convergence(shared_data):
    table = read_poses(shared_data / "panoramas/amsterdam/panorama1.csv")
    pano = georeference(table, "EPSG:25831+5773",
                        images={"pano_0001_000529": shared_data / "panoramas/amsterdam/pano_0001_000529.jpg"})[0]
    assert (pano.width, pano.height) == (8000, 4000)
    # UTM 31N, 1.9° east of the central meridian at 52.4° N: grid north lies 1.51° east of true north
    conv = float(grid_convergence(cim.crs.resolve("EPSG:25831"), pano.lon, pano.lat)[0])
    assert conv == pytest.approx(-(4.9043 - 3.0) * np.sin(np.radians(52.3683)), abs=0.01)
    assert pano.angles[0] == pytest.approx(123.647497626591 + conv, abs=1e-6)
    assert pano.angles_true[0] == pytest.approx(123.6475, abs=1e-4)
    assert pano.position[0] == pytest.approx(629649.59, abs=0.05)
    assert pano.position[1] == pytest.approx(5803710.91, abs=0.05)
    # EGM96 heights: 46.15 m ellipsoidal is a few metres above the geoid at Amsterdam (N ≈ 43 m)
    assert 1.0 < pano.position[2] < 6.0
    assert pano.datetime == "2016-03-24T08:11:35.868Z"


def test_amsterdam_outside_the_job_crs_height_grid(shared_data):
    table = read_poses(shared_data / "panoramas/amsterdam/panorama1.csv")
    with pytest.raises((InputError, CrsError)):
        georeference(table, "EPSG:25832+7837")  # GCG2016 covers Germany only


def test_trajectory_does_not_cover_amsterdam_panorama(shared_data):
    table = read_poses(shared_data / "panoramas/amsterdam/panorama1.csv")
    traj = read_trajectory(shared_data / "panoramas/amsterdam/trajectory.csv")
    assert traj.quaternion is None and len(traj.gps_time) == 3
    with pytest.raises(InputError, match="does not cover"):
        traj.interpolate(table.gps_time)


def test_generic_csv_interpolated_from_trajectory(tmp_path):
    x0, y0 = 410800.0, 5479700.0
    # a trajectory with attitude, heading wrapping over north, grid headings in the job CRS
    (tmp_path / "traj.csv").write_text(
        "time,x,y,z,heading,pitch,roll\n"
        f"100.0,{x0},{y0},237.0,350.0,0.0,0.0\n"
        f"101.0,{x0 + 2},{y0 + 10},238.0,10.0,2.0,-2.0\n"
    )
    (tmp_path / "poses.csv").write_text("name;time\nA;100.25\nB;100.5\n")
    table = read_poses(tmp_path / "poses.csv")
    assert not table.has_position.any()
    traj = read_trajectory(tmp_path / "traj.csv", crs="EPSG:25832+7837")
    panos = georeference(table, "EPSG:25832+7837", trajectory=traj)
    b = panos[1]
    np.testing.assert_allclose(b.position, [x0 + 1, y0 + 5, 237.5], atol=1e-6)
    h, p, r = b.angles
    assert min(abs(h - 360.0), abs(h)) < 0.05  # slerp takes the short way over north
    assert p == pytest.approx(1.0, abs=0.15) and r == pytest.approx(-1.0, abs=0.15)  # slerp, not per-angle
    with pytest.raises(InputError, match="does not cover"):
        (tmp_path / "late.csv").write_text("name,time\nC,105\n")
        georeference(read_poses(tmp_path / "late.csv"), "EPSG:25832+7837", trajectory=traj)


def test_generic_csv_quaternions_utc_and_errors(tmp_path):
    q = quaternion_from_convention("hpr", 45.0, 0.0, 0.0)[0]
    (tmp_path / "q.csv").write_text(
        "name,time,x,y,z,qw,qx,qy,qz\n"
        f"P1,2016-03-24T08:11:35.868Z,410800,5479700,237,{q[0]},{q[1]},{q[2]},{q[3]}\n"
    )
    table = read_poses(tmp_path / "q.csv", crs="EPSG:25832+7837", time_base="utc")
    assert table.north == "grid"
    assert table.gps_time[0] == pytest.approx(1142842312.868, abs=1e-3)
    pano = georeference(table, "EPSG:25832+7837")[0]
    assert pano.angles[0] == pytest.approx(45.0)
    with pytest.raises(InputError, match="need the CRS"):
        read_poses(tmp_path / "q.csv", time_base="utc")
    (tmp_path / "dup.csv").write_text("name,lat,lon,h\nA,49.4,7.7,290\nA,49.4,7.7,290\n")
    with pytest.raises(InputError, match="twice"):
        read_poses(tmp_path / "dup.csv")
    (tmp_path / "zero.csv").write_text("name,lat,lon,h\nA,0,0,0\n")
    with pytest.raises(InputError, match="lat 0, lon 0"):
        read_poses(tmp_path / "zero.csv")
    (tmp_path / "short.csv").write_text("name,lat,lon,h\nA,49.4\n")
    with pytest.raises(InputError, match="fields"):
        read_poses(tmp_path / "short.csv")


def _jpeg_with_xmp(path, xmp: str) -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 16, 3), np.uint8))
    data = buf.tobytes()
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp.encode()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    path.write_bytes(data[:2] + segment + data[2:])


def test_gpano_xmp(tmp_path):
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:GPano="http://ns.google.com/photos/1.0/panorama/" '
           'GPano:ProjectionType="equirectangular" GPano:PoseHeadingDegrees="123.5">'
           '<GPano:PosePitchDegrees>1.5</GPano:PosePitchDegrees></rdf:Description></rdf:RDF></x:xmpmeta>')
    _jpeg_with_xmp(tmp_path / "p.jpg", xmp)
    props = read_gpano(tmp_path / "p.jpg")
    assert props["ProjectionType"] == "equirectangular"
    assert props["PosePitchDegrees"] == "1.5"
    h, p, r = camera.angles_from_quaternion(gpano_quaternion(props))
    assert (float(h), float(p), float(r)) == pytest.approx((123.5, 1.5, 0.0))


def test_pannellum_sample_has_no_gpano(shared_data):
    assert read_gpano(shared_data / "panoramas/pannellum/examplepano.jpg") == {}


# --- index and STAC ------------------------------------------------------------------------------------------


def test_index_json_and_stac_round_trip(tmp_path):
    import pyogrio

    (tmp_path / "p.csv").write_text("name,time,lat,lon,h,heading,pitch,roll\n"
                                    "K1,1450000000,49.4447,7.7690,290.0,80,1,0\n"
                                    "K2,1450000001,49.4448,7.7692,290.1,82,1,0\n")
    panos = georeference(read_poses(tmp_path / "p.csv"), "EPSG:25832+7837")
    panos = [p.with_products(image=f"panoramas/{p.name}/image.jpg") for p in panos]
    write_index(panos, tmp_path / "index.fgb")
    write_index(panos, tmp_path / "index.gpkg")
    info = pyogrio.read_info(tmp_path / "index.fgb")
    assert info["features"] == 2 and info["geometry_type"] == "Point Z"
    assert "heading_true" in list(info["fields"])
    write_panoramas_json(panos, tmp_path / "panoramas.json")
    back = load_panoramas(tmp_path / "panoramas.json")
    assert back[0].position == panos[0].position
    assert back[0].products["image"] == str(tmp_path / "panoramas/K1/image.jpg")
    path = write_collection(panos, tmp_path / "stac")
    item = json.loads((tmp_path / "stac" / "K1" / "K1.json").read_text())
    assert item["properties"]["pers:crs"] == 25832 and item["properties"]["pers:vertical_crs"] == 7837
    assert item["properties"]["view:azimuth"] == pytest.approx(80.0, abs=1e-6)
    assert item["geometry"]["type"] == "Point"
    assert json.loads(path.read_text())["type"] == "Collection"


# --- cube faces and tiles ------------------------------------------------------------------------------------


def _direction_image(width: int) -> np.ndarray:
    d = camera.pixel_centre_directions(width, width // 2)
    return np.round((d + 1.0) * 127.5).astype(np.uint8)


def test_cube_faces_look_where_marzipano_expects():
    faces = cube_faces(_direction_image(1024), 64)
    for name, (fwd, right, up) in CUBE_FACES.items():
        face = faces[name].astype(float) / 127.5 - 1.0
        np.testing.assert_allclose(face[32, 32], fwd, atol=0.05)
        # moving right in the face image turns towards 'right', moving up towards 'up'
        assert np.dot(face[32, 60] - face[32, 4], right) > 0.5
        assert np.dot(face[4, 32] - face[60, 32], up) > 0.5
    # u's bottom edge meets f's top edge; d's top edge meets f's bottom edge
    f = faces["f"].astype(float)
    assert np.abs(faces["u"][-1].astype(float) - f[0]).mean() < 6
    assert np.abs(faces["d"][0].astype(float) - f[-1]).mean() < 6


def test_cube_faces_match_py360convert(shared_data):
    py360convert = pytest.importorskip("py360convert")
    image = cv2.imread(str(shared_data / "panoramas/pannellum/examplepano.jpg"))
    mine = cube_faces(image, 512)
    theirs = py360convert.e2c(image, 512, cube_format="dict")
    for ours, other in zip("frblu", "FRBLU"):  # same orientation; sub-pixel sampling conventions differ
        a = cv2.GaussianBlur(mine[ours].astype(float), (9, 9), 0)
        b = cv2.GaussianBlur(theirs[other].astype(float), (9, 9), 0)
        assert np.abs(a - b).mean() < 1.5


def test_north_up_faces_are_a_column_roll():
    image = _direction_image(1024)
    turned = cube_faces(image, 64, yaw_shift_deg=90.0)
    # yaw shift 90 (a panorama heading east): the new front is the old left (90° counter-clockwise)
    np.testing.assert_array_equal(turned["f"], cube_faces(np.roll(image, 256, axis=1), 64)["f"])
    face = turned["f"].astype(float) / 127.5 - 1.0
    np.testing.assert_allclose(face[32, 32], [0, 1, 0], atol=0.05)


def test_marzipano_layout(tmp_path):
    image = _direction_image(2048)
    assert default_face_size(8000) == 2048 and default_face_size(2048) == 512
    config = write_marzipano(image, tmp_path / "tiles", face_size=512, tile_size=256)
    assert [lv["size"] for lv in config["levels"]] == [256, 256, 512]
    assert config["levels"][0]["fallbackOnly"] is True
    files = sorted(p.relative_to(tmp_path / "tiles").as_posix() for p in (tmp_path / "tiles").rglob("*.jpg"))
    assert len(files) == 6 * 1 + 6 * 4 + 1
    assert "2/f/1/1.jpg" in files and "1/u/0/0.jpg" in files
    preview = cv2.imread(str(tmp_path / "tiles" / "preview.jpg"))
    assert preview.shape[:2] == (256 * 6, 256)
    # the preview's third face (order b d f l r u) is the front face
    assert PREVIEW_ORDER[2] == "f"
    front = cv2.resize(cube_faces(image, 512)["f"], (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(preview[512:768].astype(float) - front).mean() < 3
    first = (tmp_path / "tiles" / "2/f/1/1.jpg").read_bytes()
    write_marzipano(image, tmp_path / "tiles", face_size=512, tile_size=256)
    assert (tmp_path / "tiles" / "2/f/1/1.jpg").read_bytes() == first  # deterministic
    with pytest.raises(ValueError):
        write_marzipano(image, tmp_path / "bad", face_size=700, tile_size=256)


# --- depth files ---------------------------------------------------------------------------------------------


def test_depth_cog_round_trip_and_validates(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    depth = np.full((512, 1024), np.inf, dtype=np.float32)
    depth[100:400, :] = np.linspace(1.0, 60.0, 1024, dtype=np.float32)[None, :]
    write_depth_cog(tmp_path / "d.tif", depth, max_depth=100.0)
    valid, errors, _ = cog_validate(str(tmp_path / "d.tif"))
    assert valid, errors
    back = read_depth(tmp_path / "d.tif")
    assert np.isnan(back[0, 0])
    assert np.nanmax(np.abs(back[100:400] - depth[100:400])) < 100.0 / 65534
    with pytest.raises(InputError):
        read_depth(tmp_path / "missing.tif")


# --- anonymization -------------------------------------------------------------------------------------------


def test_blur_changes_only_regions_and_wraps_the_seam():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (512, 1024, 3), dtype=np.uint8)
    regions = [Region("face", 0.9, 100, 200, 160, 270, 0.0, 0.0), Region("plate", 1.0, 1000, 300, 1040, 330, 0, 0)]
    out = blur_regions(image, regions)
    mask = np.zeros(image.shape[:2], bool)
    mask[200:270, 100:160] = True
    mask[300:330, 1000:] = True
    mask[300:330, :16] = True  # the part across the seam
    np.testing.assert_array_equal(out[~mask], image[~mask])
    for sl in (np.s_[200:270, 100:160], np.s_[300:330, 1000:], np.s_[300:330, :16]):
        assert out[sl].astype(float).var() < 0.2 * image[sl].astype(float).var()
    assert image[200, 100].tolist() != out[200, 100].tolist() or image[201, 101].tolist() != out[201, 101].tolist()


@pytest.fixture(scope="module")
def amsterdam_detections(shared_data):
    image = cv2.imread(str(shared_data / "panoramas/amsterdam/pano_0001_000529.jpg"))
    return image, detect(image, AnonymizeOptions())


def test_faces_found_on_the_real_panorama(amsterdam_detections):
    """The two men standing beside the survey car (azimuth ≈ −65°/−85°, ~3 m away), found in the 2048 views."""
    image, regions = amsterdam_detections
    faces = [r for r in regions if r.kind == "face"]
    near = [r for r in faces if -110 < r.azimuth_deg < -60 and -20 < r.elevation_deg < 0 and r.x1 - r.x0 > 100]
    assert len(near) >= 2, faces
    out = blur_regions(image, regions)
    mask = np.zeros(image.shape[:2], bool)
    for r in regions:
        cols = np.arange(r.x0, r.x1) % image.shape[1]
        mask[r.y0:r.y1, cols] = True
    np.testing.assert_array_equal(out[~mask], image[~mask])
    for r in near:
        patch_in = cv2.Laplacian(cv2.cvtColor(image[r.y0:r.y1, r.x0:r.x1], cv2.COLOR_BGR2GRAY), cv2.CV_64F)
        patch_out = cv2.Laplacian(cv2.cvtColor(out[r.y0:r.y1, r.x0:r.x1], cv2.COLOR_BGR2GRAY), cv2.CV_64F)
        assert patch_out.var() < 0.05 * patch_in.var()  # detail (sharpness) destroyed


def test_distant_faces_found_in_the_horizon_strips(amsterdam_detections):
    """The cyclists 15-30 m away (faces of 12-25 px at full resolution) are found in the equirectangular strips."""
    _, regions = amsterdam_detections
    small = [r for r in regions if r.kind == "face" and abs(r.elevation_deg) < 6 and r.x1 - r.x0 < 60]
    assert len(small) >= 4, small


def test_strip_search_wraps_the_seam(amsterdam_detections):
    """A distant face rolled onto the image seam is found once, as a region passing the right edge."""
    image, regions = amsterdam_detections
    face = max((r for r in regions if r.kind == "face" and r.x1 - r.x0 < 60), key=lambda r: r.score)
    shift = image.shape[1] - (face.x0 + face.x1) // 2  # the face's centre column moves to column 0
    rolled = np.roll(image, shift, axis=1)
    opts = AnonymizeOptions(plates=False, strips=((-6.0, 6.0, 8000),))
    found = [r for r in detect(rolled, opts) if r.kind == "face" and abs(r.elevation_deg - face.elevation_deg) < 1]
    at_seam = [r for r in found if r.x0 < image.shape[1] < r.x1]
    assert len(at_seam) == 1, found


def test_clean_synthetic_panorama_has_no_detections():
    image = _direction_image(2048)
    assert detect(image, AnonymizeOptions(detect_width=2048)) == []


def test_orientation_from_gpano_fills_missing_angles(tmp_path):
    from cim.panoramas.process import _orientation_from_gpano

    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description xmlns:GPano="http://ns.google.com/photos/1.0/panorama/"'
           ' GPano:PoseHeadingDegrees="200.0" GPano:PosePitchDegrees="-1.0" GPano:PoseRollDegrees="0.5"/></x:xmpmeta>')
    _jpeg_with_xmp(tmp_path / "G1.jpg", xmp)
    (tmp_path / "p.csv").write_text("name,lat,lon,h\nG1,49.4447,7.7690,290.0\n")
    table = read_poses(tmp_path / "p.csv")
    assert not table.has_orientation.any()
    _orientation_from_gpano(table, {"G1": tmp_path / "G1.jpg"})
    pano = georeference(table, "EPSG:25832+7837")[0]
    assert pano.angles_true == pytest.approx((200.0, -1.0, 0.5))


def test_run_refuses_to_write_into_the_images_folder(tmp_path):
    from test_panoramas_resume import publish

    (tmp_path / "p.csv").write_text("name,lat,lon,h,heading,pitch,roll\nA,49.4,7.7,290,0,0,0\n")
    with pytest.raises(InputError, match="must not be the images folder"):
        publish(tmp_path / "p.csv", tmp_path, tmp_path / "out")
    with pytest.raises(InputError, match="none of the 1 panoramas"):
        publish(tmp_path / "p.csv", tmp_path, tmp_path.parent / (tmp_path.name + "-out"))


def test_read_image_errors(tmp_path):
    from cim.panoramas.process import read_image

    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(InputError, match="broken.jpg: not a readable image"):
        read_image(tmp_path / "broken.jpg")
    cv2.imwrite(str(tmp_path / "square.png"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="not 2:1"):
        read_image(tmp_path / "square.png")


def test_a_broken_image_fails_alone_and_resumes(tmp_path):
    from cim.cli.jobs import panoramas_job
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "A.jpg"), _direction_image(512)[:, :, ::-1])
    cv2.imwrite(str(images / "B.jpg"), _direction_image(512))
    cv2.imwrite(str(images / "C.jpg"), _direction_image(512)[:200])  # decodes, but is not 2:1: its task fails
    (tmp_path / "p.csv").write_text("name,lat,lon,h,heading,pitch,roll\n"
                                    "A,49.4447,7.7690,290,10,0,0\nB,49.4448,7.7691,290,20,0,0\n"
                                    "C,49.4449,7.7692,290,30,0,0\n")
    out = tmp_path / "out"
    job = parse_job(panoramas_job(tmp_path / "p.csv", images, out), out / "panoramas.toml")

    def run() -> dict[str, str]:
        report = run_job(job, scheduler="threads", workers=1).report
        return {k: o.status for k, o in report.outcomes.items()}

    (images / "A.jpg").write_bytes((images / "A.jpg").read_bytes()[:5000])  # truncated: refused before any work
    with pytest.raises(InputError, match="A.jpg: the image does not decode completely"):
        run()
    assert not (out / "panoramas").exists()
    cv2.imwrite(str(images / "A.jpg"), _direction_image(512)[:, :, ::-1])
    first = run()
    assert first["00-panoramas.publish/C"] == "failed" and first["00-panoramas.publish/B"] == "done"
    assert [p.name for p in load_panoramas(out / "panoramas.json")] == ["A", "B"]  # the others are indexed
    assert (out / "panoramas" / "B" / "tiles" / "marzipano.json").is_file()
    cv2.imwrite(str(images / "C.jpg"), _direction_image(512))
    second = run()
    assert [k for k, v in second.items() if v == "done"] == ["00-panoramas.publish/C", "00-panoramas.publish/finish",
                                                            "catalog"]  # only C was redone, then the index
    assert [p.name for p in load_panoramas(out / "panoramas.json")] == ["A", "B", "C"]


def test_fill_holes_interpolates_between_both_sides_and_not_across_edges():
    from cim.panoramas.depth import fill_holes

    ramp = np.tile(np.linspace(10.0, 12.0, 21, dtype=np.float32)[:, None], (1, 40))  # distance grows 10 cm per row
    holes = ramp.copy()
    holes[5:7, :] = np.inf  # a two-row gap across the street: filled from above and below, unbiased
    holes[12, 3] = np.inf
    filled = fill_holes(holes, 2)
    np.testing.assert_allclose(filled[5:7], ramp[5:7], atol=1e-4)
    assert filled[12, 3] == pytest.approx(ramp[12, 3], abs=1e-4)
    edge = np.full((5, 12), np.inf, np.float32)
    edge[:, :4], edge[:, 6:] = 5.0, 20.0  # a pole's edge in front of a wall: the gap between them stays empty
    assert not np.isfinite(fill_holes(edge, 2)[:, 4:6]).any()
    wide = ramp.copy()
    wide[:, 10:14] = np.inf  # wider than the gap: left alone
    assert not np.isfinite(fill_holes(wide, 2)[:, 11:13]).any()


def test_closed_front_surface_hides_what_lies_between_a_near_objects_stripes():
    from cim.panoramas.depth import closed_front_end

    width = 64
    rows, cols = np.mgrid[0:32, 0:64]
    wall = np.full((32, 64), 10.0)
    post = (cols >= 20) & (cols < 30) & (cols % 3 == 0)  # scan stripes of a post 4 m away, 2 pixels apart
    front = np.where(post, 4.0, wall)
    keys = (rows * width + cols).ravel()

    def reach(values):  # farthest distance still on the front surface, as front_points judges it (0.2 m + 2 %)
        surface, allowance = closed_front_end(keys, values.ravel(), width)
        return (surface + allowance + 0.2 + 0.02 * surface).reshape(values.shape)

    behind = (cols >= 21) & (cols < 27) & ~post  # the wall between the stripes
    assert (reach(front)[behind] < 10.0).all()  # the wall there counts as hidden
    assert (reach(front)[:, :15] >= 10.0).all() and (reach(front)[:, 35:] >= 10.0).all()  # beside the post: seen
    ramp = 5.0 + 0.3 * rows  # a road seen at a grazing angle: nothing on it is hidden
    assert (reach(ramp) >= ramp).all()
