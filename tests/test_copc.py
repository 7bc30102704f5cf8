"""COPC output (``write.copc``): every point and dimension back, a real octree, queries by bounds and resolution."""

from __future__ import annotations

import datetime
import json
import struct
from pathlib import Path

import laspy
import lazrs
import numpy as np
import pyproj
import pytest

from cim.io import copc, las
from cim.pipeline.execute import run_job
from cim.pipeline.job import JobConfigError, load_job
from cim.points import PointCloud
from tests.helpers import REPO, delft_job, product_digests, write_job

MAX_POINTS = 20_000


def _sorted_columns(cloud: PointCloud) -> dict[str, np.ndarray]:
    """Every dimension, points in one canonical order (coordinates to the millimetre)."""
    cols = {n: (np.round(cloud[n] * 1000).astype(np.int64) if n in "xyz" else cloud[n]) for n in cloud.names}
    order = np.lexsort([cols[n] for n in sorted(cols, reverse=True)])
    return {n: v[order] for n, v in cols.items()}


def _hierarchy(path: Path) -> tuple[laspy.LasHeader, dict[str, float], list[tuple[tuple[int, ...], int, int, int]]]:
    """Header, info VLR fields and hierarchy entries, parsed from the bytes (independently of the writer)."""
    raw = path.read_bytes()
    header = laspy.LasHeader.read_from(open(path, "rb"))
    info_at = 375 + 54  # the info VLR's data follows the header and its VLR header
    assert raw[375 + 2:375 + 6] == b"copc" and struct.unpack_from("<H", raw, 375 + 18)[0] == 1
    cx, cy, cz, half, spacing, root_at, root_size, gmin, gmax = struct.unpack_from("<5d2Q2d", raw, info_at)
    page = raw[root_at:root_at + root_size]
    entries = [struct.unpack_from("<4iQii", page, i) for i in range(0, len(page), 32)]
    info = {"center": (cx, cy, cz), "half": half, "spacing": spacing, "gps": (gmin, gmax)}
    return header, info, [(tuple(e[:4]), e[4], e[5], e[6]) for e in entries]


@pytest.fixture(scope="module")
def delft_copc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("copc")
    body = delft_job(tmp / "o").replace('type = "write.las"', f'type = "write.copc"\nmax_points = {MAX_POINTS}')
    result = run_job(load_job(write_job(tmp / "j.toml", body)), scheduler="threads")
    assert result.report.ok
    return tmp / "o", result


def test_every_point_and_dimension_comes_back_with_the_crs(delft_copc: tuple[Path, object]) -> None:
    out, _ = delft_copc
    files = sorted((REPO / "data" / "delft").glob("ahn3_cropped_*.laz"))
    source = PointCloud.concat(las.read(f, crs="EPSG:7415") for f in files)
    written = las.read(out / "pointcloud.copc.laz")
    assert las.open_source(out / "pointcloud.copc.laz").is_copc
    assert written.crs == pyproj.CRS("EPSG:7415")
    # point format 6 adds the overlap flag and the scanner channel that the PF1 inputs cannot hold: all unset
    assert sorted(written.names) == sorted({*source.names, "overlap", "scanner_channel"})
    assert not written["overlap"].any() and not written["scanner_channel"].any()
    a, b = _sorted_columns(source), _sorted_columns(written)
    for name in source.names:
        tolerance = 0.003 if name == "scan_angle" else 0  # LAS 1.4 stores the angle in 0.006 degree units
        np.testing.assert_allclose(b[name], a[name], atol=tolerance, err_msg=name)
    with laspy.CopcReader.open(str(out / "pointcloud.copc.laz")) as reader:
        assert reader.header.point_format.id == 6 and str(reader.header.version) == "1.4"
        assert len(reader.query()) == len(source)


def test_the_hierarchy_is_a_consistent_octree(delft_copc: tuple[Path, object]) -> None:
    out, _ = delft_copc
    path = out / "pointcloud.copc.laz"
    header, info, entries = _hierarchy(path)
    keys = {e[0]: e for e in entries}
    assert len(keys) == len(entries) and (0, 0, 0, 0) in keys
    assert sum(e[3] for e in entries) == header.point_count == 640510 + 208432
    levels = max(k[0] for k in keys) + 1
    assert levels >= 3  # 850k points at 20k per node need depth
    raw = path.read_bytes()
    vlr = laspy.LasReader(open(path, "rb")).header.vlrs.get("LasZipVlr")[0]
    lo = np.asarray(info["center"]) - info["half"]
    chunks = sorted((e[1], e[2]) for e in entries if e[3] > 0)
    for (a, size), (b, _) in zip(chunks, chunks[1:]):
        assert a + size <= b  # chunks do not overlap
    gps = []
    for (level, i, j, k), offset, size, count in entries:
        if level:
            assert (level - 1, i >> 1, j >> 1, k >> 1) in keys, "every node has its parent"
        assert 0 <= min(i, j, k) and max(i, j, k) < 2**level
        assert count <= MAX_POINTS
        if count == 0:
            assert any(key[0] == level + 1 and (key[1] >> 1, key[2] >> 1, key[3] >> 1) == (i, j, k) for key in keys)
            continue
        buf = np.zeros(count * header.point_format.size, np.uint8)
        lazrs.decompress_points_with_chunk_table(raw[offset:offset + size], vlr.record_data, buf, [(count, size)])
        points = laspy.ScaleAwarePointRecord(laspy.PackedPointRecord.from_buffer(buf, header.point_format).array,
                                             header.point_format, header.scales, header.offsets)
        edge = 2 * info["half"] / 2**level
        node_lo = lo + np.array([i, j, k]) * edge
        xyz = np.column_stack([points.x, points.y, points.z])
        assert np.all(xyz >= node_lo - 1e-6) and np.all(xyz <= node_lo + edge + 1e-6), "points inside their node"
        gps.append(np.asarray(points.gps_time))
    gps = np.concatenate(gps)
    assert info["gps"] == (gps.min(), gps.max())
    assert info["spacing"] == pytest.approx(2 * info["half"] / 128)


def test_coarse_resolution_reads_few_points_spread_over_the_area(delft_copc: tuple[Path, object]) -> None:
    out, _ = delft_copc
    with laspy.CopcReader.open(str(out / "pointcloud.copc.laz")) as reader:
        total = reader.header.point_count
        full = reader.query()
        coarse = reader.query(resolution=reader.copc_info.spacing)
    assert 1000 < len(coarse) < total / 20

    def cells(points: laspy.ScaleAwarePointRecord) -> set[tuple[int, int]]:
        x, y = (np.asarray(points.x) // 20).astype(int), (np.asarray(points.y) // 20).astype(int)
        return set(zip(x.tolist(), y.tolist()))

    assert len(cells(coarse)) >= 0.95 * len(cells(full))  # spatially even: nearly every 20 m cell is sampled


def test_a_bounds_query_returns_exactly_the_points_inside(delft_copc: tuple[Path, object]) -> None:
    out, _ = delft_copc
    with laspy.CopcReader.open(str(out / "pointcloud.copc.laz")) as reader:
        full = reader.query()
        mins, maxs = np.array([84900.0, 447500.0, -100.0]), np.array([84960.0, 447550.0, 5.0])
        part = reader.query(bounds=laspy.copc.Bounds(mins=mins, maxs=maxs))
    xyz = np.column_stack([full.x, full.y, full.z])
    inside = np.all((xyz >= mins) & (xyz <= maxs), axis=1)
    got = np.column_stack([part.x, part.y, part.z])
    assert 1000 < len(got) < len(full) / 4
    np.testing.assert_array_equal(got[np.lexsort(got.T)], xyz[inside][np.lexsort(xyz[inside].T)])


def test_the_catalog_lists_the_copc_and_reruns_are_byte_identical(delft_copc: tuple[Path, object],
                                                                  tmp_path: Path) -> None:
    out, result = delft_copc
    catalog = json.loads((out / "stac" / "catalog.json").read_text())
    item_link = next(link["href"] for link in catalog["links"] if link["rel"] == "item")
    item = json.loads((out / "stac" / item_link).resolve().read_text())
    assert item["assets"]["data"]["type"] == "application/vnd.laszip+copc"
    assert item["properties"]["pc:count"] == 640510 + 208432
    assert item["properties"]["proj:code"] == "EPSG:7415"
    again = run_job(load_job(write_job(tmp_path / "j.toml", (out.parent / "j.toml").read_text()
                                       .replace(out.as_posix(), (tmp_path / "o").as_posix()))), scheduler="threads")
    assert again.report.ok
    assert product_digests(tmp_path / "o")["pointcloud.copc.laz"] == product_digests(out)["pointcloud.copc.laz"]


def test_several_height_layers_extra_dimensions_and_week_time(tmp_path: Path) -> None:
    """A tall scene spanning several cube layers, NIR (format 8), an extra dimension and GPS week seconds."""
    rng = np.random.default_rng(7)
    n = 60_000
    x, y = rng.uniform(1000, 1180, n), rng.uniform(2000, 2090, n)
    z = rng.uniform(-30, 170, n)  # three 100 m layers
    cloud = PointCloud({"x": x, "y": y, "z": z, "classification": rng.integers(0, 20, n).astype("u1"),
                        "gps_time": rng.uniform(0, 6e5, n), "red": rng.integers(0, 65535, n), "green": np.zeros(n),
                        "blue": np.zeros(n), "nir": rng.integers(0, 65535, n), "height": rng.normal(size=n)},
                       pyproj.CRS("EPSG:25832+7837"))
    layout = copc.Layout(0.001, (0.0, 0.0, 0.0), 100.0, 32, 2000)
    tiles = []
    for ix in (10, 11):
        for iy in (20,):
            mask = np.floor(x / 100) == ix
            tile = copc.build_tile(cloud[mask & (np.floor(y / 100) == iy)], layout, tmp_path / f"{ix}",
                                   datetime.date(2020, 5, 1))
            tiles.append({**tile, "work": str(tmp_path / f"{ix}")})
    facts = copc.assemble(tiles, layout, cloud.crs, tmp_path / "a.copc.laz", tmp_path / "nodes",
                          datetime.date(2020, 5, 1))
    assert facts["points"] == n
    back = las.read(tmp_path / "a.copc.laz")
    assert back.crs == pyproj.CRS("EPSG:25832+7837")
    assert laspy.open(tmp_path / "a.copc.laz").header.point_format.id == 8
    a, b = _sorted_columns(cloud), _sorted_columns(back)
    for name in cloud.names:
        np.testing.assert_array_equal(b[name], a[name].astype(b[name].dtype), err_msg=name)
    _, info, entries = _hierarchy(tmp_path / "a.copc.laz")
    assert info["half"] == 200.0  # 2 x 1 x 3 cubes of 100 m -> a 400 m root
    assert max(e[3] for e in entries) <= 2000


def test_block_too_large_for_the_scale_is_a_config_error(tmp_path: Path) -> None:
    body = delft_job(tmp_path / "o").replace('type = "write.las"', 'type = "write.copc"\nscale = 0.0001')
    with pytest.raises(JobConfigError, match="block"):
        load_job(write_job(tmp_path / "j.toml", body))


def test_cim_ground_writes_copc(repo_data: Path, tmp_path: Path) -> None:
    """``cim ground --format copc``: one COPC per input, all points, the CRS, ground found against AHN's labels."""
    from tests.helpers import cim_cli

    pc = las.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs="EPSG:7415")
    truth = pc["classification"] == 2
    pc.set("classification", np.zeros(len(pc), np.uint8))
    las.write(tmp_path / "in" / "part.laz", pc)
    done = cim_cli("ground", str(tmp_path / "in" / "part.laz"), "--out", str(tmp_path / "out"), "--format", "copc")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.laz")) == ["part.copc.laz"]
    with laspy.CopcReader.open(str(tmp_path / "out" / "part.copc.laz")) as reader:
        assert reader.header.point_count == len(pc)
    got = las.read(tmp_path / "out" / "part.copc.laz")
    assert got.crs == pyproj.CRS("EPSG:7415")
    order_in = np.lexsort((pc.z, pc.y, pc.x))
    order_out = np.lexsort((got.z, got.y, got.x))
    np.testing.assert_allclose(got.xyz[order_out], pc.xyz[order_in], atol=1e-6)
    ground = got["classification"][order_out] == 2
    assert (ground & truth[order_in]).sum() / truth.sum() > 0.99
    bad = cim_cli("ground", str(tmp_path / "in" / "part.laz"), "--out", str(tmp_path / "o2"), "--format", "e57")
    assert bad.returncode == 2 and "--format" in bad.stdout + bad.stderr


def test_write_refuses_empty_and_non_finite_clouds(tmp_path: Path) -> None:
    from cim.errors import InputError

    with pytest.raises(InputError, match="no points"):
        copc.write(tmp_path / "e.copc.laz", PointCloud.empty())
    with pytest.raises(InputError, match="NaN"):
        copc.write(tmp_path / "n.copc.laz", PointCloud.from_xyz(np.array([[0.0, 0.0, np.nan]])))
    assert list(tmp_path.iterdir()) == []


def test_a_job_over_several_blocks_writes_one_file_per_block(tmp_path: Path) -> None:
    body = delft_job(tmp_path / "o").replace('type = "write.las"', 'type = "write.copc"\nblock = 200.0')
    result = run_job(load_job(write_job(tmp_path / "j.toml", body)), scheduler="threads")
    assert result.report.ok
    files = sorted((tmp_path / "o").glob("*.copc.laz"))
    assert [p.name for p in files] == ["pointcloud_424_2237.copc.laz", "pointcloud_424_2238.copc.laz",
                                       "pointcloud_425_2237.copc.laz", "pointcloud_425_2238.copc.laz"]
    total = 0
    for path in files:
        bx, by = (int(v) for v in path.name.split(".")[0].split("_")[1:])
        with laspy.CopcReader.open(str(path)) as reader:
            points = reader.query()
            assert np.allclose(reader.header.offsets[:2], [bx * 200.0, by * 200.0])
        assert np.all(np.floor(np.asarray(points.x) / 200) == bx) and np.all(np.floor(np.asarray(points.y) / 200) == by)
        total += len(points)
    assert total == 640510 + 208432
    assert sorted(p.path for p in result.products) == [p.name for p in files]


def test_per_source_copc_holds_one_tile_and_gives_every_dimension_back(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``write.las`` with ``per_source`` and ``copc``: the tile steps build the octree below their cubes from their
    own points (here at most a fifth of the input), the finish only the levels above; every point comes back with
    every dimension, GPS time as exactly as cim's time base holds it (GPS seconds: the adjusted value + 1e9 in
    float64)."""
    from tests.test_las_dimensions import EXTRAS, FIELDS, _terrain_file

    source = tmp_path / "a.las"
    data = _terrain_file(tmp_path / "raw.las", 8, seed=6)  # 60 m x 60 m, 12,000 points, every field random
    data.change_scaling(scales=[0.001] * 3, offsets=np.floor(data.header.mins))  # the COPC's own grid
    data.write(source)
    original = laspy.read(source)
    held: list[int] = []
    build = copc.build_tile
    monkeypatch.setattr(copc, "build_tile", lambda cloud, *a, **k: held.append(len(cloud)) or build(cloud, *a, **k))
    job = write_job(tmp_path / "j.toml", f"""
[job]
name = "per-source"
output = "{(tmp_path / 'o').as_posix()}"

[[stages]]
type = "read.las"
files = ["{source.as_posix()}"]
withheld = "keep"

[[stages]]
type = "tile"
size = 20.0
buffer = 2.0

[[stages]]
type = "write.las"
per_source = true
copc = true
""")
    result = run_job(load_job(job), scheduler="threads", workers=1)
    assert result.report.ok, result.report.by_status("failed")
    assert len(held) == result.tiles >= 9 and sum(held) == 12_000 and max(held) < 12_000 / 5
    path = tmp_path / "o" / "las" / "a.copc.laz"
    with laspy.CopcReader.open(str(path)) as reader:
        back = reader.query()
        assert reader.header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD
        np.testing.assert_array_equal(reader.header.offsets, original.header.offsets)
    assert len(back) == 12_000
    order, back_order = np.argsort(np.asarray(original.gps_time)), np.argsort(np.asarray(back.gps_time))
    for name in ("X", "Y", "Z", "classification", *FIELDS, *EXTRAS, "red", "green", "blue", "nir"):
        np.testing.assert_array_equal(np.asarray(back[name])[back_order], np.asarray(original[name])[order],
                                      err_msg=name)
    time_base = (np.asarray(original.gps_time) + las.ADJUSTED_GPS_OFFSET) - las.ADJUSTED_GPS_OFFSET
    np.testing.assert_array_equal(np.asarray(back.gps_time)[back_order], time_base[order])


def test_a_point_rounded_onto_the_next_tiles_edge_stays_in_its_tiles_cube(tmp_path: Path) -> None:
    """x = 49.9999 belongs to the tile [0, 50) but is 50.000 on the 1 mm grid: its cube is its tile's, so the two
    tiles never build the same cube (which left a corrupt file: one cube's chunks overwritten)."""
    rng = np.random.default_rng(1)
    n = 2000
    x, y, z = np.r_[rng.uniform(0, 100, n), 49.9999], rng.uniform(0, 50, n + 1), rng.uniform(0, 10, n + 1)
    cloud = PointCloud({"x": x, "y": y, "z": z, "intensity": np.arange(n + 1, dtype="u2")},
                       pyproj.CRS("EPSG:25832"))
    layout = copc.Layout(0.001, (0.0, 0.0, 0.0), 50.0, 32, 500)
    tiles = []
    for ix in (0, 1):
        work = tmp_path / str(ix)
        tiles.append({**copc.build_tile(cloud[np.floor(x / 50) == ix], layout, work, datetime.date(2020, 1, 1)),
                      "work": str(work)})
    copc.assemble(tiles, layout, cloud.crs, tmp_path / "a.copc.laz", tmp_path / "nodes", datetime.date(2020, 1, 1))
    back = las.read(tmp_path / "a.copc.laz")
    np.testing.assert_array_equal(np.sort(back["intensity"]), np.arange(n + 1))
    assert back.x[back["intensity"] == n][0] == 50.0
