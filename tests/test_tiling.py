"""Tile grid, buffers and out-of-core partitioning: every point in exactly one core, buffers right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest

import cim
from cim.io import las
from cim.tiling import TileGrid, load_tile, partition_file


def test_every_point_has_exactly_one_core_tile_and_the_right_buffers() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-300, 300, 20_000), rng.uniform(-300, 300, 20_000)
    grid = TileGrid(100.0, 10.0)
    idx, tix, tiy, core = grid.assign(x, y)
    assert np.bincount(idx[core], minlength=len(x)).tolist() == [1] * len(x)
    minx, miny, maxx, maxy = (np.array([grid.tile(a, b).buffered_bounds[k] for a, b in zip(tix, tiy)])
                              for k in range(4))
    assert np.all((x[idx] >= minx) & (x[idx] < maxx) & (y[idx] >= miny) & (y[idx] < maxy))
    # a point 5 m from a tile edge is in the neighbour's buffer; one 15 m away is not
    idx2, tix2, tiy2, core2 = grid.assign(np.array([95.0, 85.0]), np.array([50.0, 50.0]))
    members = {(int(i), int(a), int(b), bool(c)) for i, a, b, c in zip(idx2, tix2, tiy2, core2)}
    assert members == {(0, 0, 0, True), (0, 1, 0, False), (1, 0, 0, True)}


def test_grid_rejects_buffer_not_smaller_than_tile() -> None:
    with pytest.raises(ValueError, match="buffer"):
        TileGrid(10.0, 10.0)


def _partitioned(repo_data: Path, parts: Path, buffer: float) -> tuple[pyproj.CRS, TileGrid, dict[str, int],
                                                                        cim.PointCloud]:
    """A shipped Delft tile partitioned into ``parts`` on 50 m tiles with ``buffer``: CRS, grid, points per tile and
    the file's points as read whole."""
    path = repo_data / "delft" / "ahn3_cropped_2.laz"
    crs = pyproj.CRS("EPSG:7415")
    grid = TileGrid(50.0, buffer)
    counts = partition_file(las.open_source(path, crs), grid, crs, parts, chunk_size=30_000)
    return crs, grid, counts, cim.read(path, crs=crs)


def test_partition_then_load_reproduces_every_point_once(repo_data: Path, tmp_path: Path) -> None:
    crs, grid, counts, original = _partitioned(repo_data, tmp_path / "parts", 5.0)
    assert sum(counts.values()) == len(original)
    cores = []
    for key in counts:
        tile = grid.tile_from_key(key)
        cloud = load_tile([tmp_path / "parts"], tile, crs)
        assert np.all(tile.in_core(cloud.x[cloud.core], cloud.y[cloud.core]))
        minx, miny, maxx, maxy = tile.buffered_bounds
        assert np.all((cloud.x >= minx) & (cloud.x < maxx) & (cloud.y >= miny) & (cloud.y < maxy))
        cores.append(cloud[cloud.core])
    merged = cim.PointCloud.concat(cores)
    key = lambda c: np.lexsort((c.gps_time, c.z, c.y, c.x))  # noqa: E731
    np.testing.assert_array_equal(merged.xyz[key(merged)], original.xyz[key(original)])
    np.testing.assert_array_equal(merged.classification[key(merged)], original.classification[key(original)])


def test_load_tile_keeps_dimensions_only_some_inputs_have(tmp_path: Path) -> None:
    crs = cim.crs.resolve("EPSG:25832+7837")
    rng = np.random.default_rng(3)
    xyz = {k: rng.uniform(0, 40, 500) for k in "xyz"}
    als = cim.PointCloud({**xyz, "intensity": np.full(500, 7, "u2")}, crs)
    mls = cim.PointCloud({**xyz, "red": np.full(500, 60000, "u2"), "green": np.zeros(500, "u2"),
                          "blue": np.zeros(500, "u2"), "intensity": np.full(500, 9, "u2")}, crs)
    grid = TileGrid(50.0, 5.0)
    for name, cloud in (("als", als), ("mls", mls)):
        cim.write(tmp_path / f"{name}.laz", cloud)
        partition_file(las.open_source(tmp_path / f"{name}.laz", crs), grid, crs, tmp_path / name)
    with pytest.warns(cim.errors.CimWarning, match="als.laz has no red, green, blue: its points get 0"):
        tile = load_tile([tmp_path / "als", tmp_path / "mls"], grid.tile(0, 0), crs)
    assert len(tile) == 1000 and tile.has("red")
    assert sorted(np.unique(tile["red"]).tolist()) == [0, 60000]  # ALS points zero-filled, MLS colours kept
    assert sorted(np.unique(tile["intensity"]).tolist()) == [7, 9]


def test_parts_store_each_point_once_compactly_and_buffers_come_from_the_neighbours(repo_data: Path,
                                                                                   tmp_path: Path) -> None:
    path = repo_data / "delft" / "ahn3_cropped_2.laz"
    crs = pyproj.CRS("EPSG:7415")
    grid = TileGrid(50.0, 5.0)
    header = cim.io.las.open_source(path, crs).header
    quanta = {n: (float(s), float(o)) for n, s, o in zip("xyz", header.scales, header.offsets)}
    counts = partition_file(las.open_source(path, crs), grid, crs, tmp_path / "parts", chunk_size=30_000, quanta=quanta)
    parts = list((tmp_path / "parts").glob("*.cols"))
    assert {p.stem for p in parts} == set(counts)  # one file per tile with core points, none for buffers
    # compressed: near the LAZ size (a job's work folder must stay within 1.5x its input)
    assert sum(p.stat().st_size for p in parts) < 1.35 * path.stat().st_size
    original = cim.read(path, crs=crs)
    for key in counts:
        tile = grid.tile_from_key(key)
        cloud = load_tile([tmp_path / "parts"], tile, crs)
        minx, miny, maxx, maxy = tile.buffered_bounds
        inside = (original.x >= minx) & (original.x < maxx) & (original.y >= miny) & (original.y < maxy)
        expected = original[inside & ~tile.in_core(original.x, original.y)]
        buffer = cloud[~cloud.core]
        order = lambda c: np.lexsort((c.gps_time, c.z, c.y, c.x))  # noqa: E731
        np.testing.assert_array_equal(buffer.xyz[order(buffer)], expected.xyz[order(expected)])
        np.testing.assert_array_equal(buffer.intensity[order(buffer)], expected.intensity[order(expected)])


def test_a_tile_without_buffer_loads_its_own_part_only(repo_data: Path, tmp_path: Path) -> None:
    crs, grid, counts, original = _partitioned(repo_data, tmp_path / "parts", 0.0)
    key = max(counts, key=counts.get)
    tile = grid.tile_from_key(key)
    for other in counts:  # the neighbours' parts are not even opened: garbage there changes nothing
        if other != key:
            (tmp_path / "parts" / f"{other}.cols").write_bytes(b"not a column file")
    cloud = load_tile([tmp_path / "parts"], tile, crs)
    assert len(cloud) == counts[key] and cloud.core.all()
    expected = original[tile.in_core(original.x, original.y)]
    np.testing.assert_array_equal(cloud.xyz, expected.xyz)  # one chunk after another, in file order
    np.testing.assert_array_equal(cloud.intensity, expected.intensity)


def test_partition_keeps_each_tiles_points_in_file_order_and_drops_those_outside_the_area(tmp_path: Path) -> None:
    crs = cim.crs.resolve("EPSG:25832+7837")
    rng = np.random.default_rng(7)
    n = 6_000
    cloud = cim.PointCloud({"x": np.round(rng.uniform(-130, 170, n), 2), "y": np.round(rng.uniform(-60, 110, n), 2),
                            "z": np.round(rng.uniform(0, 30, n), 2), "intensity": np.arange(n, dtype="u2")}, crs)
    cim.write(tmp_path / "in.laz", cloud)
    cloud = cim.read(tmp_path / "in.laz")  # as stored (quantized)
    grid, area = TileGrid(50.0, 0.0), (-101.0, -35.5, 142.0, 90.0)
    counts = partition_file(las.open_source(tmp_path / "in.laz", crs), grid, crs, tmp_path / "parts",
                            area=area, chunk_size=2_500)  # chunks of many tiles each
    inside = (cloud.x >= area[0]) & (cloud.x < area[2]) & (cloud.y >= area[1]) & (cloud.y < area[3])
    ix, iy = np.floor(cloud.x / 50.0).astype(int), np.floor(cloud.y / 50.0).astype(int)
    expected = {f"{a}_{b}": np.flatnonzero(inside & (ix == a) & (iy == b)) for a, b in set(zip(ix[inside], iy[inside]))}
    assert counts == {key: len(rows) for key, rows in expected.items()}
    for key, rows in expected.items():
        tile = load_tile([tmp_path / "parts"], grid.tile_from_key(key), crs)
        assert tile["intensity"].tolist() == rows.tolist()  # intensity = position in the file: point order kept
        np.testing.assert_array_equal(tile.x, cloud.x[rows])


def test_a_chunk_spread_over_far_apart_tiles_is_grouped_without_a_table_of_every_tile_between(tmp_path: Path) -> None:
    crs = cim.crs.resolve("EPSG:25832+7837")
    x = np.array([0.5, 1_000_000.5, 1.5, 0.25])
    y = np.array([0.5, 1_000_000.5, 0.5, 900_000.5])
    cim.write(tmp_path / "far.laz", cim.PointCloud({"x": x, "y": y, "z": np.zeros(4)}, crs))
    counts = partition_file(las.open_source(tmp_path / "far.laz", crs), TileGrid(1.0, 0.0), crs, tmp_path / "parts")
    assert counts == {"0_0": 1, "1_0": 1, "1000000_1000000": 1, "0_900000": 1}  # 1e12 tiles between them
