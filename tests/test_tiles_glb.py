"""Unit tests of the 3D Tiles building blocks: GLB writers, placement, LOD octree, tileset writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cim.errors import CrsError
from cim.tiles3d.glb import (
    PointProperty,
    accessor_array,
    decode_points,
    mesh_glb,
    points_glb,
    read_glb,
)
from cim.tiles3d.lod import build_octree, grid_sample
from cim.tiles3d.placement import LocalFrame
from cim.tiles3d.tileset import Tile, write_tileset
from test_tiles_helpers import KL_CRS, decode_meshopt_js, require_gltf_validator, schema_errors, validate_glbs


def _house():
    pos = np.array([[0, 0, 0], [10, 0, 0], [10, 8, 0], [0, 8, 0], [5, 4, 6], [20, 0, 0], [24, 0, 0], [22, 3, 4]],
                   float) + [410800.0 - 410800.0, 0, 0]
    idx = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [5, 6, 7]], np.uint32)
    fid = np.array([0, 0, 0, 0, 0, 1, 1, 1], np.uint32)
    props = {"id": np.array(["DEBW_001", "DEBW_äöü"], object), "height": np.array([6.0, 4.0]),
             "storeys": np.array([2, 1], np.int32), "flat": np.array([False, True])}
    return pos, idx, fid, props


def _table_column(gltf, binary, table, name):
    prop = table["properties"][name]
    view = gltf["bufferViews"][prop["values"]]
    raw = binary[view["byteOffset"]: view["byteOffset"] + view["byteLength"]]
    if "stringOffsets" in prop:
        ov = gltf["bufferViews"][prop["stringOffsets"]]
        offs = np.frombuffer(binary[ov["byteOffset"]: ov["byteOffset"] + ov["byteLength"]], np.uint32)
        return [raw[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:])]
    return raw


def test_mesh_glb_features_and_property_table(tmp_path):
    pos, idx, fid, props = _house()
    data = mesh_glb(pos, idx, normals=np.tile([0, 0, 2.0], (len(pos), 1)), feature_ids=fid, properties=props)
    gltf, binary = read_glb(data)
    prim = gltf["meshes"][0]["primitives"][0]
    assert prim["mode"] == 4
    fids = accessor_array(gltf, binary, prim["attributes"]["_FEATURE_ID_0"])[:, 0]
    assert np.array_equal(fids, fid)
    normals = accessor_array(gltf, binary, prim["attributes"]["NORMAL"])
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)
    meta = gltf["extensions"]["EXT_structural_metadata"]
    table = meta["propertyTables"][0]
    assert table["count"] == 2
    assert _table_column(gltf, binary, table, "id") == ["DEBW_001", "DEBW_äöü"]
    assert np.array_equal(np.frombuffer(_table_column(gltf, binary, table, "height"), np.float64), [6.0, 4.0])
    assert np.unpackbits(np.frombuffer(_table_column(gltf, binary, table, "flat"), np.uint8),
                         bitorder="little")[:2].tolist() == [0, 1]
    assert meta["schema"]["classes"]["building"]["properties"]["storeys"]["componentType"] == "INT32"
    assert schema_errors(meta, "glTF.EXT_structural_metadata.schema.json") == []
    assert schema_errors(prim["extensions"]["EXT_mesh_features"], "mesh.primitive.EXT_mesh_features.schema.json") == []
    assert schema_errors(gltf, "glTF.schema.json") == []
    # positions: float32 relative to the box centre, restored exactly by the node translation
    rel = accessor_array(gltf, binary, prim["attributes"]["POSITION"])
    m = np.asarray(gltf["nodes"][0]["matrix"]).reshape(4, 4).T
    yup = rel @ m[:3, :3].T + m[:3, 3]
    assert np.allclose(np.column_stack([yup[:, 0], -yup[:, 2], yup[:, 1]]), pos, atol=1e-5)
    require_gltf_validator()
    (tmp_path / "m.glb").write_bytes(data)
    (tmp_path / "plain.glb").write_bytes(mesh_glb(pos, idx))
    reports = validate_glbs([tmp_path / "m.glb", tmp_path / "plain.glb"])
    assert all(r["numErrors"] == 0 and r["numWarnings"] == 0 for r in reports), reports


def test_mesh_glb_empty_strings(tmp_path):
    """Empty strings (some or all rows, None included) are encodable and pass the glTF validator."""
    pos, idx, fid, props = _house()
    columns = {"mixed": np.array(["", "Hauptstraße 1"], object), "all_empty": np.array(["", ""], object),
               "missing": np.array([None, ""], object), "unicode": np.array(["", "ä"]), "raw": np.array([b"", b"x"])}
    data = mesh_glb(pos, idx, feature_ids=fid, properties={**props, **columns})
    gltf, binary = read_glb(data)
    table = gltf["extensions"]["EXT_structural_metadata"]["propertyTables"][0]
    expected = {"mixed": ["", "Hauptstraße 1"], "all_empty": ["", ""], "missing": ["", ""], "unicode": ["", "ä"],
                "raw": ["", "x"]}
    for name, values in expected.items():
        assert _table_column(gltf, binary, table, name) == values, name
    assert schema_errors(gltf, "glTF.schema.json") == []
    require_gltf_validator()
    (tmp_path / "empty.glb").write_bytes(data)
    reports = validate_glbs([tmp_path / "empty.glb"])
    assert all(r["numErrors"] == 0 and r["numWarnings"] == 0 for r in reports), reports


def test_mesh_glb_rejects_bad_input():
    pos, idx, fid, props = _house()
    with pytest.raises(ValueError, match="out of range"):
        mesh_glb(pos, idx + 100)
    with pytest.raises(ValueError, match="one per feature"):
        mesh_glb(pos, idx, feature_ids=fid, properties={"h": np.array([1.0, 2.0]), "g": np.array([1.0])})
    with pytest.raises(ValueError, match="no row"):
        mesh_glb(pos, idx, feature_ids=fid + 5, properties=props)


def test_points_glb_quantization_and_offsets(tmp_path):
    rng = np.random.default_rng(0)
    local = rng.random((5000, 3)) * [120, 80, 30] - 40
    gps = 1.4e9 + rng.random(5000) * 100
    props = [PointProperty("gps_time", (gps - gps.min()).astype(np.float32), offset=float(gps.min())),
             PointProperty("classification", rng.integers(0, 20, 5000).astype(np.uint8))]
    data = points_glb(local, rgb=rng.random((5000, 3)), properties=props)
    decoded, attrs, gltf = decode_points(data)
    step = (local.max(axis=0) - local.min(axis=0)) / 65535
    assert np.all(np.abs(decoded - local) <= step / 2 + 1e-9)
    spec = gltf["extensions"]["EXT_structural_metadata"]["propertyAttributes"][0]["properties"]["gps_time"]
    restored = attrs[spec["attribute"]][:, 0].astype(np.float64) + spec["offset"]
    assert np.max(np.abs(restored - gps)) < 1e-5
    require_gltf_validator()
    (tmp_path / "p.glb").write_bytes(data)
    (report,) = validate_glbs([tmp_path / "p.glb"])
    assert report["numErrors"] == 0 and report["numWarnings"] == 0, report


def test_local_frame_fast_path_matches_exact_and_round_trips():
    frame = LocalFrame.from_crs(KL_CRS, (410900.0, 5479800.0, 240.0))
    rng = np.random.default_rng(1)
    n = 50_000
    x, y, z = 410650 + rng.random(n) * 500, 5479550 + rng.random(n) * 500, 200 + rng.random(n) * 120
    fast = frame.to_local(x, y, z)
    exact = frame.to_local_exact(x, y, z)
    assert np.max(np.abs(fast - exact)) < 2e-4
    back = frame.from_local(exact[:2000])
    assert np.max(np.abs(back - np.column_stack([x, y, z])[:2000])) < 1e-6
    # the frame is east-north-up: up is the ellipsoid normal, so a point 10 m higher is 10 m up
    up = frame.to_local_exact(np.array([410900.0]), np.array([5479800.0]), np.array([250.0]))[0]
    assert np.allclose(up, [0, 0, 10.0], atol=1e-6)


def test_ballpark_heights_are_refused():
    # CGVD28 heights need a Canadian geoid grid that is not shipped: PROJ would fall back to a ballpark
    with pytest.raises(CrsError, match="ballpark|vertical"):
        LocalFrame.from_crs("EPSG:3005+5713", (885100.0, 629300.0, 340.0))
    with pytest.raises(CrsError):
        LocalFrame.from_crs(None, (0.0, 0.0, 0.0))


def test_octree_every_point_once_and_even_sampling():
    rng = np.random.default_rng(2)
    n = 200_000
    local = np.column_stack([rng.random(n) * 200, rng.random(n) * 200, rng.normal(0, 0.2, n)])
    tree = build_octree(local, leaf_points=5000, grid_bits=6)
    assert np.array_equal(np.sort(tree.order), np.arange(n))
    assert sum(nd.count for nd in tree.nodes) == n
    for i, nd in enumerate(tree.nodes):
        pts = local[tree.points_of(i)]
        cell = tree.side / 2**nd.level
        lo = tree.origin + np.array(nd.index) * cell
        assert np.all(pts >= lo - 1e-9) and np.all(pts <= lo + cell + 1e-9)
        assert np.all(pts >= nd.box_min) and np.all(pts <= nd.box_max)
        if not nd.children:
            assert nd.count <= 5000
        for c in nd.children:
            child = tree.nodes[c]
            assert child.level == nd.level + 1
            assert np.all(child.box_min >= nd.box_min) and np.all(child.box_max <= nd.box_max)
    # the root takes, of each occupied voxel of its spacing, the point nearest the voxel centre (brute force)
    spacing = tree.spacing(0)
    cell = np.floor((local - tree.origin) / spacing)
    dist = np.linalg.norm(local - (tree.origin + (cell + 0.5) * spacing), axis=1)
    order = np.lexsort((dist, cell[:, 2], cell[:, 1], cell[:, 0]))
    first = np.ones(n, bool)
    first[1:] = np.any(np.diff(cell[order], axis=0) != 0, axis=1)
    nearest = order[first]
    root_ids = tree.points_of(0)
    assert len(root_ids) == len(nearest)
    assert np.all(np.sort(dist[root_ids]) <= np.sort(dist[nearest]) + spacing * 2**-14)
    # the root sample is even: one point per occupied voxel, so nearly every voxel of the flat area has one
    root = local[tree.points_of(0)]
    spacing = tree.spacing(0)
    cells = np.unique(np.floor(root[:, :2] / spacing).astype(int), axis=0)
    area_cells = (200 / spacing) ** 2
    assert len(cells) > 0.9 * area_cells


@pytest.mark.parametrize("spread", [63, 45, 6])
def test_sort_codes_is_a_stable_sort(spread):
    """Sparse codes (the packed fast path), clustered codes (ties in the high bits), and many equal codes."""
    from cim.tiles3d.lod import sort_codes

    rng = np.random.default_rng(spread)
    codes = rng.integers(0, 2**spread, 50_000, dtype=np.uint64) << np.uint64(63 - spread)
    codes[::7] = codes[3]  # runs of equal codes keep their input order
    assert np.array_equal(sort_codes(codes), np.lexsort((np.arange(len(codes)), codes)))


@pytest.mark.parametrize("top", [1_000, 2**60])
def test_pick_per_group_takes_the_smallest_distance(top):
    """Small distances are exact; huge ones (beyond the packed key) lose only low bits."""
    from cim.tiles3d.lod import group_starts, pick_per_group

    rng = np.random.default_rng(top % 97)
    groups = np.sort(rng.integers(0, 300, 5000))
    dist = rng.integers(0, top, len(groups), dtype=np.int64)
    picks = pick_per_group(group_starts(groups), dist)
    assert np.array_equal(groups[picks], np.unique(groups))
    best = np.array([dist[groups == g].min() for g in np.unique(groups)])
    tolerance = 0 if top < 2**40 else top >> 40
    assert np.all(dist[picks] - best <= tolerance)
    if top < 2**40:  # exact: the first of equal distances wins
        first = np.array([np.flatnonzero((groups == g) & (dist == d))[0] for g, d in zip(np.unique(groups), best)])
        assert np.array_equal(picks, first)


def test_meshopt_option_needs_the_package(monkeypatch):
    import sys

    from pydantic import ValidationError

    from cim.stages.tiles import PointTilesOptions

    monkeypatch.setitem(sys.modules, "meshoptimizer", None)  # import fails as if not installed
    with pytest.raises(ValidationError, match="pip install meshoptimizer"):
        PointTilesOptions(meshopt=True)
    assert PointTilesOptions().meshopt is False


def test_grid_sample_one_per_voxel():
    rng = np.random.default_rng(3)
    pts = rng.random((20_000, 3)) * 10
    picks = grid_sample(pts, np.zeros(3), 1.0)
    keys = np.floor(pts[picks]).astype(int)
    assert len(np.unique(keys, axis=0)) == len(picks) == len(np.unique(np.floor(pts).astype(int), axis=0))
    # each pick is the point nearest its voxel centre (brute force; 1/1024 of a voxel resolution), whatever the
    # input order
    dist = np.linalg.norm(pts - (np.floor(pts) + 0.5), axis=1)
    cell = [tuple(k) for k in np.floor(pts).astype(int)]
    best: dict = {}
    for i, c in enumerate(cell):
        if c not in best or dist[i] < dist[best[c]]:
            best[c] = i
    assert all(dist[p] <= dist[best[cell[p]]] + 2e-3 for p in picks)
    shuffled = rng.permutation(len(pts))
    again = shuffled[grid_sample(pts[shuffled], np.zeros(3), 1.0)]
    assert set(again.tolist()) == set(picks.tolist())


def test_mesh_tileset_writer(tmp_path):
    frame = LocalFrame.from_crs(KL_CRS, (410800.0, 5479700.0, 235.0))
    pos, idx, fid, props = _house()
    (tmp_path / "b.glb").write_bytes(mesh_glb(pos, idx, feature_ids=fid, properties=props))
    child = Tile(pos.min(axis=0), pos.max(axis=0), 0.0, "b.glb")
    root = Tile(pos.min(axis=0) - 1, pos.max(axis=0) + 1, 10.0, children=[child], refine="REPLACE",
                transform=frame.ecef_from_local)
    doc = write_tileset(tmp_path / "tileset.json", root, 50.0)
    assert schema_errors(json.loads((tmp_path / "tileset.json").read_text()), "tileset.schema.json") == []
    assert doc["root"]["refine"] == "REPLACE"
    t = np.asarray(doc["root"]["transform"]).reshape(4, 4).T
    assert np.allclose(t, frame.ecef_from_local)


def _tile_directly(tmp_path, cloud, key="4108_54797", size=100.0, **options):
    """build_tile + build_upper_levels without the runner (degenerate inputs)."""
    from cim.tiles3d.pointcloud import TilesOptions, build_tile
    from cim.tiles3d.upper import build_upper_levels
    from cim.tiling import TileGrid

    tile = TileGrid(size, 0.0).tile_from_key(key)
    opts = TilesOptions(**options)
    stats = build_tile(cloud, key, tile.core_bounds, cloud.crs, tmp_path / "tiles" / key, tmp_path / "work", opts)
    build_upper_levels([stats], cloud.crs, size, tmp_path, tmp_path / "work", opts)
    return tmp_path / "tileset.json"


@pytest.mark.parametrize("n", [1, 70_000])
def test_degenerate_clouds_single_point_and_all_identical(tmp_path, n):
    import cim
    from cim.points import PointCloud
    from cim.tiles3d.check import check_tileset

    xyz = np.tile([410850.0, 5479750.0, 240.0], (n, 1))
    cloud = PointCloud.from_xyz(xyz, cim.crs.resolve(KL_CRS), intensity=np.arange(n, dtype=np.uint16))
    path = _tile_directly(tmp_path, cloud, leaf_points=1000)
    report = check_tileset(path, keep_values=True)
    assert report.ok, report.problems[:5]
    assert report.points == n
    assert report.sums["intensity"] == float(np.arange(n, dtype=np.uint16).astype(np.int64).sum())
    assert schema_errors(json.loads(path.read_text()), "tileset.schema.json") == []


def test_missing_extra_dimension_is_named(tmp_path):
    import cim
    from cim.errors import ConfigError
    from cim.points import PointCloud

    cloud = PointCloud.from_xyz(np.array([[410850.0, 5479750.0, 240.0]]), cim.crs.resolve(KL_CRS))
    with pytest.raises(ConfigError, match="Amplitude"):
        _tile_directly(tmp_path, cloud, extra=("Amplitude",))


def test_cli_refuses_ballpark_heights_with_a_clear_message(tmp_path):
    from typer.testing import CliRunner

    from cim.cli.app import _load_commands, app

    _load_commands()
    from cim.io import las
    from cim.points import PointCloud

    src = tmp_path / "bc.laz"
    las.write(src, PointCloud.from_xyz(np.array([[885100.0, 629300.0, 340.0]]), None))
    res = CliRunner().invoke(app, ["tiles", str(src), "--out", str(tmp_path / "o"), "--crs", "EPSG:3005+5713"])
    assert res.exit_code != 0
    assert "ballpark" in str(res.exception) + res.output
    assert not (tmp_path / "o").exists()  # refused before any work
    res = CliRunner().invoke(app, ["tiles", str(tmp_path / "missing.laz"), "--out", str(tmp_path / "o")])
    assert "file not found" in str(res.exception)


def test_sort_codes_equals_a_stable_sort():
    from cim.tiles3d.lod import sort_codes

    rng = np.random.default_rng(4)
    for codes in (rng.integers(0, 50, 50_000).astype(np.uint64), rng.integers(0, 2**63, 50_000, dtype=np.uint64)):
        assert np.array_equal(sort_codes(codes), np.argsort(codes, kind="stable"))


def test_heights_in_feet_of_a_2d_crs_are_converted():
    """LAS heights share the horizontal unit; PROJ would take them as metres for a 2D projected CRS."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no vertical CRS: heights are taken as ellipsoidal"
        frame = LocalFrame.from_crs("EPSG:2994", (636500.0, 849200.0, 450.0))  # Oregon Lambert, international ft
    assert abs(frame.origin_geodetic[2] - 450.0 * 0.3048) < 1e-6
    up = frame.to_local_exact(np.array([636500.0]), np.array([849200.0]), np.array([1450.0]))[0]
    assert np.allclose(up, [0, 0, 304.8], atol=1e-3)  # the HARN -> WGS 84 Helmert moves it by 0.1 mm
    back = frame.from_local(up[None, :])[0]
    assert np.allclose(back, [636500.0, 849200.0, 1450.0], atol=1e-5)


def test_sparse_points_over_many_tiles_link_only_tiles_with_content(tmp_path):
    """A few points spread over 8 x 8 tiles: the upper levels take them all; no empty tile links remain."""
    import cim
    from cim.io import las
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job
    from cim.points import PointCloud
    from cim.tiles3d.check import check_tileset

    rng = np.random.default_rng(5)
    xyz = np.column_stack([410000 + rng.random(300) * 800, 5479000 + rng.random(300) * 800, 240 + rng.random(300)])
    las.write(tmp_path / "sparse.laz", PointCloud.from_xyz(xyz, cim.crs.resolve(KL_CRS)))
    document = {"job": {"name": "sparse", "output": str(tmp_path / "out")},
                "stages": [{"type": "read.las", "files": [str(tmp_path / "sparse.laz")]},
                           {"type": "tile", "size": 100.0, "buffer": 0.0},
                           {"type": "tiles.pointcloud", "folder": ""}]}
    assert run_job(parse_job(document, tmp_path / "job.toml"), scheduler="threads", workers=2).report.ok
    report = check_tileset(tmp_path / "out" / "tileset.json")
    assert report.ok and report.points == 300
    assert report.tiles < 64  # not one (empty) link per processing tile
    linked = {p.parent.name for p in (tmp_path / "out" / "tiles").glob("*/tileset.json")}
    assert linked == {p.name for p in (tmp_path / "out" / "tiles").iterdir()}  # no empty tile folders left


def test_dimension_names_become_valid_metadata_identifiers():
    from cim.tiles3d.pointcloud import property_identifiers

    ids = property_identifiers(["intensity", "Reflectance (dB)", "1st", "a-b", "a_b", "A_B"])
    assert ids == {"intensity": "intensity", "Reflectance (dB)": "Reflectance__dB_", "1st": "_1st",
                   "a-b": "a_b", "a_b": "a_b_2", "A_B": "A_B_3"}


def test_non_finite_extra_values_become_no_data(tmp_path):
    import cim
    from cim.points import PointCloud
    from cim.tiles3d.check import check_tileset
    from cim.tiles3d.pointcloud import NO_DATA

    rng = np.random.default_rng(6)
    n = 3000
    xyz = np.column_stack([410800 + rng.random(n) * 50, 5479700 + rng.random(n) * 50, 240 + rng.random(n)])
    amp = rng.random(n).astype(np.float32)
    amp[::7] = np.nan
    wide = rng.random(n) * 1e6
    wide[::11] = np.inf
    cloud = PointCloud.from_xyz(xyz, cim.crs.resolve(KL_CRS), amplitude=amp, wide=wide)
    path = _tile_directly(tmp_path, cloud, extra=("amplitude", "wide"))
    report = check_tileset(path, keep_values=True)
    assert report.ok and report.points == n
    doc = json.loads(path.read_text())
    assert doc["schema"]["classes"]["point"]["properties"]["amplitude"]["noData"] == NO_DATA
    stats = doc["statistics"]["classes"]["point"]["properties"]["amplitude"]
    assert np.isfinite(stats["max"]) and stats["max"] <= 1.0
    raw = np.concatenate(report.values["amplitude"])
    assert np.sum(raw == NO_DATA) == np.sum(np.isnan(amp))
    require_gltf_validator()
    reports = validate_glbs(sorted(tmp_path.rglob("*.glb")))
    assert all(r["numErrors"] == 0 for r in reports), reports[:2]


def test_points_glb_meshopt_round_trip(tmp_path):
    """EXT_meshopt_compression: meshoptimizer's JavaScript decoder restores every view byte for byte."""
    pytest.importorskip("meshoptimizer")
    import base64

    rng = np.random.default_rng(5)
    n = 20_000
    local = np.cumsum(rng.normal(0, 0.05, (n, 3)), axis=0)  # spatially coherent, as octree contents are
    props = [PointProperty("intensity", rng.integers(0, 4000, n).astype(np.uint16)),
             PointProperty("classification", rng.integers(1, 7, n).astype(np.uint8)),
             PointProperty("gps_time", np.sort(rng.random(n)).astype(np.float32), offset=4.0e8)]
    rgb = rng.random((n, 3))
    plain = points_glb(local, rgb=rgb, properties=props)
    packed = points_glb(local, rgb=rgb, properties=props, meshopt=True)
    assert len(packed) < 0.8 * len(plain)
    gltf, binary = read_glb(packed)
    assert "EXT_meshopt_compression" in gltf["extensionsRequired"]
    assert gltf["buffers"][1]["extensions"]["EXT_meshopt_compression"]["fallback"] is True
    assert "uri" not in gltf["buffers"][1]
    # the Python reader (meshoptimizer's C decoder) gives the same points and attributes
    pos_a, attrs_a, _ = decode_points(plain)
    pos_b, attrs_b, _ = decode_points(packed)
    assert np.array_equal(pos_a, pos_b)
    assert all(np.array_equal(attrs_a[k], attrs_b[k]) for k in attrs_a)
    # meshoptimizer's own JavaScript decoder (what CesiumJS runs) restores the views byte for byte
    (tmp_path / "packed.glb").write_bytes(packed)
    report, = decode_meshopt_js([tmp_path / "packed.glb"])
    plain_gltf, plain_bin = read_glb(plain)
    compressed = [i for i, v in enumerate(gltf["bufferViews"]) if "EXT_meshopt_compression" in v.get("extensions", {})]
    assert sorted(map(int, report["views"])) == compressed == list(range(len(plain_gltf["bufferViews"])))
    for index, b64 in report["views"].items():
        view = plain_gltf["bufferViews"][int(index)]
        expected = plain_bin[view["byteOffset"]: view["byteOffset"] + view["byteLength"]]
        assert base64.b64decode(b64) == expected, index
    assert set(report["headers"]) == {0xA0}  # bitstream version 0, the one EXT_meshopt_compression specifies
    require_gltf_validator()
    reports = validate_glbs([tmp_path / "packed.glb"])
    assert all(r["numErrors"] == 0 and r["numWarnings"] == 0 for r in reports), reports


def test_colour_depth_detection():
    from cim.points import PointCloud
    from cim.tiles3d.glb import linear_colors
    from cim.tiles3d.pointcloud import RGB, color_bits

    xyz = np.zeros((3, 3))
    eight = PointCloud.from_xyz(xyz, None, red=np.array([0, 128, 255], np.uint16),
                                green=np.array([0, 0, 255], np.uint16), blue=np.array([1, 2, 3], np.uint16))
    bits = color_bits(eight, "auto")
    assert bits == 8 and linear_colors([eight[c] for c in RGB], bits)[2, 0] == 65535
    sixteen = PointCloud.from_xyz(xyz, None, red=np.array([0, 32768, 65535], np.uint16),
                                  green=np.array([0, 0, 256], np.uint16), blue=np.array([1, 2, 3], np.uint16))
    bits = color_bits(sixteen, "auto")
    assert bits == 16 and linear_colors([sixteen[c] for c in RGB], bits)[2, 0] == 65535
    assert color_bits(eight, "16") == 16  # forced
    assert color_bits(PointCloud.from_xyz(xyz, None), "auto") is None
    # forced 8 bits on 16-bit values: values above 255 count as full intensity
    assert linear_colors([sixteen[c] for c in RGB], 8)[1, 0] == 65535
