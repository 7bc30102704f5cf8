"""cim.synth: the synthetic city's truth and its simulated ALS, checked against the scene it was made from."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import laspy
import numpy as np
import open3d as o3d
import pyogrio
import pyproj
import pytest
import rasterio
import shapely

from cim.errors import ConfigError
from cim.synth import SynthConfig, generate, roofs
from cim.synth.scene import BUILDING
from tests.helpers import gps_seconds


def _las(path: Path) -> laspy.LasData:
    return laspy.read(path)


def test_every_roof_type_and_closed_outward_solids(synth_city) -> None:
    scene = synth_city.scene
    types = {b.roof_type for b in scene.buildings}
    assert {1000, 2100, 3100, 3200, 3300} <= types
    assert {"row", "detached", "L", "U"} <= {b.kind for b in scene.buildings}
    for b in scene.buildings:
        assert len(b.faces) == len(b.semantics)
        volume = roofs.solid_volume(b.faces)
        # the solid is closed and outward: its volume lies between footprint x eave and footprint x ridge heights
        low = b.footprint.area * (b.eave_height - b.ground_height)
        high = b.footprint.area * (b.ridge_height - b.ground_height)
        assert low - 1e-6 <= volume <= high + 1e-6, b.id
        roof_z = np.concatenate([f[:, 2] for f, s in zip(b.faces, b.semantics) if s == "RoofSurface"])
        assert roof_z.max() == pytest.approx(b.ridge_height)
        for face in b.faces:  # planar faces
            n = roofs.newell_normal(face)
            assert np.ptp((face - face[0]) @ n) < 1e-6
    # attached rows share walls: some pairs of row houses touch
    rows = [b for b in scene.buildings if b.kind == "row"]
    assert any(a.footprint.touches(b.footprint) for a in rows for b in rows if a is not b)


def test_solids_are_watertight_two_manifold(synth_city) -> None:
    """Every edge of every true building is shared by exactly two faces, in opposite directions."""
    for b in synth_city.scene.buildings:
        edges: dict[tuple, int] = {}
        for face in b.faces:
            ring = [tuple(np.round(v, 6)) for v in face]
            for p, q in zip(ring, ring[1:] + ring[:1]):
                edges[(p, q)] = edges.get((p, q), 0) + 1
        for (p, q), count in edges.items():
            assert count == 1 and edges.get((q, p)) == 1, (b.id, p, q)


def test_cityjson_is_valid_and_reads_back(synth_city) -> None:
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource

    from cim.cityjson import read_cityjson, read_reference_system

    schemas = Path(__file__).parent / "schemas" / "cityjson-2.0"
    resources = [(d["$id"], Resource.from_contents(d))
                 for d in (json.loads(p.read_text()) for p in schemas.glob("*.schema.json"))]
    validator = Draft7Validator(json.loads((schemas / "cityjson.schema.json").read_text()),
                                registry=Registry().with_resources(resources))
    doc = json.loads(synth_city.buildings_cityjson.read_text())
    errors = [e.message for e in validator.iter_errors(doc)]
    assert errors == []
    assert read_reference_system(synth_city.buildings_cityjson).equals(pyproj.CRS("EPSG:25832+7837"))
    back = read_cityjson(synth_city.buildings_cityjson)
    assert sorted({g.id for g in back}) == sorted(b.id for b in synth_city.scene.buildings)
    roof_types = {oid: obj["attributes"]["roofType"] for oid, obj in doc["CityObjects"].items()}
    assert roof_types == {b.id: str(b.roof_type) for b in synth_city.scene.buildings}


def test_terrain_has_kerbs_and_the_embankment(synth_city) -> None:
    scene, c = synth_city.scene, synth_city.config
    ox, oy, _ = scene.origin
    street = scene.streets_y[0]
    x = np.full(2, ox + 20.0)
    y = oy + street + np.array([scene.road_half - 0.05, scene.road_half + 0.05])
    step = np.diff(scene.terrain_height(x, y))[0]
    slope_part = abs(c.slope[1]) * 0.1 + 0.01
    assert abs(step - c.kerb_height) < slope_part
    x0, y0, x1, y1 = scene.embankment
    inside = scene.terrain_height(ox + (x0 + x1) / 2, oy + (y0 + y1) / 2)
    outside = scene.terrain_height(ox + (x0 + x1) / 2, oy + y0 - c.embankment_height * c.embankment_slope - 1)
    assert inside - outside == pytest.approx(c.embankment_height, abs=0.5)


def test_als_laz_has_crs_classes_and_density(synth_city) -> None:
    las = _las(synth_city.als_laz)
    crs = las.header.parse_crs()
    assert crs is not None and crs.equals(pyproj.CRS("EPSG:25832+7837"))
    classes = set(np.unique(las.classification).tolist())
    assert {1, 2, 5, 6} <= classes and classes <= {1, 2, 3, 4, 5, 6, 7, 18}
    truth = json.loads(synth_city.truth_json.read_text())
    assert truth["als"]["class_counts"] == {str(k): int(v) for k, v in
                                            zip(*np.unique(las.classification, return_counts=True))}
    assert len(las.points) == truth["als"]["points"]
    first = np.sum(np.asarray(las.return_number) == 1) / synth_city.config.extent ** 2
    assert first == pytest.approx(synth_city.config.als_density, rel=0.15)
    nret = np.asarray(las.number_of_returns)
    veg = np.isin(las.classification, [3, 4, 5])
    assert (nret[veg] > 1).mean() > 0.3  # trees give multiple returns
    assert np.all(np.asarray(las.return_number) <= nret)
    assert gps_seconds(las).min() >= synth_city.config.als_gps_start
    assert np.all(np.diff(gps_seconds(las)) >= 0)  # strips flown one after the other, pulses in order
    assert set(np.unique(las.point_source_id).tolist()) == set(range(1, truth["als"]["strips"] + 1))
    assert las.header.creation_date == datetime.date(2026, 4, 20)  # the survey day, not today


def test_als_points_lie_on_true_surfaces(synth_city) -> None:
    las = _las(synth_city.als_laz)
    scene = synth_city.scene
    sigma = synth_city.config.als_range_noise
    xyz = np.column_stack([las.x, las.y, las.z])
    cls = np.asarray(las.classification)
    ground = xyz[cls == 2]
    dz = ground[:, 2] - scene.terrain_height(ground[:, 0], ground[:, 1])
    # range noise along near-vertical pulses (<= 22 deg) + kerb edges
    assert np.mean(np.abs(dz) < 4 * sigma) > 0.995
    assert abs(np.mean(dz)) < 0.005
    # building points: distance to the true building solids
    mesh = scene.building_mesh
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                     o3d.core.Tensor(mesh.triangles.astype(np.uint32)))
    local = (xyz[cls == BUILDING] - scene.origin).astype(np.float32)
    dist = rc.compute_distance(o3d.core.Tensor(local)).numpy()
    assert np.mean(dist < 4 * sigma) > 0.995
    # outliers are far off any surface
    noise = xyz[np.isin(cls, [7, 18])]
    assert len(noise) > 0
    assert np.all(np.abs(noise[:, 2] - scene.terrain_height(noise[:, 0], noise[:, 1])) > 0.5)


def test_footprints_dtm_and_cityjson(synth_city) -> None:
    meta = pyogrio.read_info(synth_city.footprints_gpkg)
    assert meta["features"] == len(synth_city.scene.buildings)
    assert pyproj.CRS(meta["crs"]).to_epsg() == 25832
    _, _, geometry, fields = pyogrio.raw.read(synth_city.footprints_gpkg)
    assert sorted(fields[1].tolist()) == sorted(b.roof_type for b in synth_city.scene.buildings)
    with rasterio.open(synth_city.dtm_tif) as src:
        dtm = src.read(1)
        assert src.res == (synth_city.config.dtm_resolution, synth_city.config.dtm_resolution)
        x, y = src.xy(10, 20)
        assert dtm[10, 20] == pytest.approx(float(synth_city.scene.terrain_height(x, y)), abs=1e-3)
        assert pyproj.CRS(src.crs.to_wkt()).sub_crs_list[0].to_epsg() == 25832
    doc = json.loads(synth_city.buildings_cityjson.read_text())
    assert doc["version"] == "2.0"
    assert len(doc["CityObjects"]) == len(synth_city.scene.buildings)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    config = SynthConfig(extent=80.0, seed=5, als_density=2.0, drive_length=40.0, mls_pulse_rate=5000.0,
                         panorama_width=64, panorama_spacing=15.0, panorama_count=2)
    a = generate(tmp_path / "a", config)
    b = generate(tmp_path / "b", config)
    names = sorted(str(p.relative_to(a.out_dir)) for p in a.out_dir.rglob("*") if p.is_file())
    assert {"als.laz", "mls.laz", "truth.json", "dtm.tif", "footprints.gpkg", "buildings.city.json",
            "trajectory.csv", "panoramas/panorama1.csv", "panoramas/pano_0001_000002.jpg",
            "depth/pano_0001_000001.tif"} <= set(names)
    for name in names:
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    c = generate(tmp_path / "c", config.with_(seed=6))
    assert (c.out_dir / "als.laz").read_bytes() != (a.out_dir / "als.laz").read_bytes()


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="extent"):
        SynthConfig(extent=10)
    with pytest.raises(ConfigError, match="trajectory_rate"):
        SynthConfig(trajectory_rate=5)
    with pytest.raises(ConfigError, match="nonsense"):
        SynthConfig().with_(nonsense=1)
    for bad in ("EPSG:4326", "EPSG:2994", "not a crs"):  # geographic, feet, garbage
        with pytest.raises(ConfigError, match="crs"):
            generate(tmp_path / "never", SynthConfig(crs=bad))
        assert not (tmp_path / "never").exists()


def test_small_and_partial_configurations(tmp_path: Path) -> None:
    city = generate(tmp_path / "a", SynthConfig(extent=60.0, seed=1, als=False, drive_length=25.0, mls_scanners=1,
                                                mls_pulse_rate=3000.0, panorama_count=0, panorama_width=64))
    assert city.als_laz is None and city.mls_laz.is_file()
    assert city.buildings_cityjson.is_file() and len(city.scene.buildings) > 0
    truth = json.loads(city.truth_json.read_text())
    assert truth["panoramas"]["count"] == 0 and "als" not in truth
    assert truth["mls"]["scanners"] == [{"lever_arm_flu": [-0.8, 0.0, -0.4], "spin_axis_yaw_deg": 0.0}]
    las = _las(city.mls_laz)
    assert set(np.unique(las.point_source_id).tolist()) == {1}


def test_rerun_into_the_same_folder_leaves_no_stale_products(tmp_path: Path) -> None:
    base = SynthConfig(extent=60.0, seed=3, als_density=1.0, drive_length=30.0, mls_pulse_rate=2000.0,
                       panorama_width=32, panorama_spacing=8.0, panorama_count=3)
    first = generate(tmp_path, base)
    assert len(list(first.panorama_dir.glob("*.jpg"))) == 3 and first.als_laz.is_file()
    second = generate(tmp_path, base.with_(als=False, panorama_count=1))
    assert sorted(p.name for p in second.panorama_dir.iterdir()) == ["pano_0001_000001.jpg", "panorama1.csv"]
    assert len(list(second.depth_dir.iterdir())) == 1
    assert not (tmp_path / "als.laz").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))  # no temporaries left behind
    third = generate(tmp_path, base.with_(mls=False))
    assert third.als_laz.is_file()
    assert not any((tmp_path / n).exists() for n in ("mls.laz", "panoramas", "depth", "trajectory.csv"))


def test_truth_json_roof_planes_fit_the_roofs(synth_city) -> None:
    truth = json.loads(synth_city.truth_json.read_text())
    by_id = {b.id: b for b in synth_city.scene.buildings}
    counts = {1000: 1, 2100: 1, 3100: 2, 3200: 4, 3300: 4}
    for record in truth["buildings"]:
        b = by_id[record["id"]]
        planes = record["roof_planes"]
        assert len(planes) == counts[b.roof_type], b.id
        roof_faces = [f for f, s in zip(b.faces, b.semantics) if s == "RoofSurface"]
        for plane, face in zip(planes, roof_faces):
            n = np.asarray(plane["normal"])
            assert np.abs((face - np.asarray(plane["point"])) @ n).max() < 1e-5
            if b.roof_type == 1000:
                assert plane["slope"] == 0 and plane["aspect"] is None
        total = sum(p["area"] * np.cos(np.radians(p["slope"])) for p in planes)
        assert total == pytest.approx(b.footprint.area, rel=1e-6)  # roofs cover the footprint exactly
    assert truth["roof_type_counts"] == {str(k): sum(b.roof_type == k for b in synth_city.scene.buildings)
                                         for k in sorted({b.roof_type for b in synth_city.scene.buildings})}


def test_als_strip_misalignment_is_recorded_and_applied(tmp_path: Path) -> None:
    config = SynthConfig(extent=200.0, seed=4, als_density=1.0, mls=False, als_altitude=200.0, als_overlap=0.5,
                         als_strip_sigma=0.2, als_range_noise=0.005, als_outlier_fraction=0.0)
    city = generate(tmp_path, config)
    truth = json.loads(city.truth_json.read_text())
    offsets = np.asarray(truth["als"]["strip_offsets"])
    assert offsets.shape == (truth["als"]["strips"], 3) and truth["als"]["strips"] >= 2
    las = _las(city.als_laz)
    ground = np.asarray(las.classification) == 2
    strip = np.asarray(las.point_source_id)
    x, y, z = np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)
    for k, off in enumerate(offsets, start=1):
        sel = ground & (strip == k)
        # on near-flat ground a strip's vertical offset shows directly (horizontal ones only through the slope)
        dz = z[sel] - city.scene.terrain_height(x[sel] - off[0], y[sel] - off[1])
        assert np.median(dz) == pytest.approx(off[2], abs=0.01)
    # switching it on leaves the rest of the simulation unchanged
    plain = generate(tmp_path / "plain", config.with_(als_strip_sigma=0.0))
    assert len(_las(plain.als_laz).points) == pytest.approx(len(las.points), rel=0.01)


def test_point_ids_name_the_object_each_point_lies_on(tmp_path: Path) -> None:
    city = generate(tmp_path, SynthConfig(extent=100.0, seed=8, als_density=4.0, drive_length=40.0,
                                          mls_pulse_rate=5000.0, panorama_count=0, point_ids=True))
    scene = city.scene
    for path in (city.als_laz, city.mls_laz):
        las = _las(path)
        ids = np.asarray(las.object_id)
        cls = np.asarray(las.classification)
        assert np.all(ids[cls == 2] == 0) and np.all(ids[np.isin(cls, [7, 18])] == 0)
        assert np.all((ids[cls == 6] >= 1) & (ids[cls == 6] <= len(scene.buildings)))
        veg = np.isin(cls, [3, 4, 5])
        assert np.all((ids[veg] >= 100_000) & (ids[veg] < 100_000 + len(scene.trees)))
        # a building point lies on (within noise of) the solid its id names, and inside that footprint's buffer
        xyz = np.column_stack([las.x, las.y, las.z])[cls == 6]
        for bid in np.unique(ids[cls == 6])[:10]:
            b = scene.buildings[int(bid) - 1]
            mine = xyz[ids[cls == 6] == bid]
            assert shapely.contains_xy(b.footprint.buffer(0.3), mine[:, 0], mine[:, 1]).mean() > 0.99
    plain = generate(tmp_path / "plain", SynthConfig(extent=100.0, seed=8, als_density=4.0, drive_length=40.0,
                                                     mls_pulse_rate=5000.0, panorama_count=0))
    assert "object_id" not in set(_las(plain.als_laz).point_format.dimension_names)
    np.testing.assert_array_equal(_las(plain.als_laz).x, _las(city.als_laz).x)  # nothing else changes
