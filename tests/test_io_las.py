"""LAS/LAZ/COPC reading and writing: values, CRS parsing, bounds queries, and bad files."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import laspy
import numpy as np
import pytest

import cim
from cim.errors import InputError
from cim.io import las


def test_round_trip_keeps_values_classes_and_crs(repo_data: Path, tmp_path: Path) -> None:
    original = cim.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs="EPSG:7415")
    assert len(original) == 208432
    assert original.crs.to_epsg() == 7415
    out = cim.write(tmp_path / "copy.laz", original)
    back = cim.read(out)
    assert back.crs.equals(original.crs)
    np.testing.assert_allclose(back.xyz, original.xyz, atol=0.0005)
    for name in ("classification", "intensity", "return_number", "number_of_returns", "gps_time"):
        np.testing.assert_array_equal(back[name], original[name])
    header = laspy.read(out).header
    assert (str(header.version), header.point_format.id, header.are_points_compressed) == ("1.4", 6, True)


def test_chunks_stream_the_whole_file(repo_data: Path) -> None:
    chunks = list(las.iter_chunks(repo_data / "delft" / "ahn3_cropped_2.laz", chunk_size=50_000))
    assert [len(c) for c in chunks[:-1]] == [50_000] * (len(chunks) - 1)
    assert sum(len(c) for c in chunks) == 208432


def test_laz_is_decoded_a_few_chunks_per_call_as_the_task_may_and_the_points_are_the_same(
        repo_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a run a task's LAZ decoding uses its share of the cores. lazrs holds the GIL while it decodes: a task
    on one thread decodes a chunk per call in a worker process, and under the threads scheduler, where the other
    tasks wait for each call, as many chunks per call as there are cores, side by side; outside a run a read
    decodes on every core. The points are the same every way."""
    import lazrs

    from cim.threads import limited

    path = repo_data / "delft" / "ahn3_cropped_2.laz"
    decode = lazrs.decompress_points_with_chunk_table
    calls: list[int] = []

    def counted(compressed, record_data, out, sizes, selection):  # noqa: ANN001, ANN202 - lazrs' signature
        calls.append(len(sizes))
        return decode(compressed, record_data, out, sizes, selection)

    monkeypatch.setattr(lazrs, "decompress_points_with_chunk_table", counted)
    decoded, chunks_per_call = {}, {}
    for threads, gil in ((1, 1), (1, 3), (2, 2)):
        calls.clear()
        with limited(threads, gil):
            decoded[threads, gil] = cim.PointCloud.concat(list(las.iter_chunks(path, chunk_size=250_000)))
        chunks_per_call[threads, gil] = max(calls)
    assert chunks_per_call[1, 1] == 1 and chunks_per_call[1, 3] == 3 and chunks_per_call[2, 2] >= 5
    assert len(decoded[1, 1]) == 208432
    for key in [(1, 3), (2, 2)]:
        for name in decoded[1, 1].names:
            np.testing.assert_array_equal(decoded[1, 1][name], decoded[key][name])


def test_a_thread_client_task_may_decode_on_every_core_while_it_holds_the_gil() -> None:
    from cim.runner.cluster import ThreadClient
    from cim.threads import gil_threads, task_threads

    client = ThreadClient(2)
    try:
        shares = client.submit(lambda: (task_threads(), gil_threads()), key="share").result(timeout=20)
    finally:
        client.close()
    cores = os.cpu_count() or 1
    assert shares == (max(1, cores // 2), cores)


@pytest.mark.parametrize(
    ("name", "code", "source"),
    [
        ("bcts/bcts_1.laz", "EPSG:3005+5713", "geotiff"),  # vertical key kept (laspy drops it)
        ("edge-cases/file_with_both_wkt_and_geotiff_vlrs.las", "EPSG:6880", "wkt"),  # WKT bit: WKT wins
        ("edge-cases/1.2-with-color.copc.laz", "EPSG:2991+6360", "wkt"),
        ("edge-cases/las_with_several_extra_byte_bloc.laz", "EPSG:2154", "wkt"),
        ("isprs/samp11.laz", "EPSG:32632", "geotiff"),
    ],
)
def test_crs_from_file(shared_data: Path, name: str, code: str, source: str) -> None:
    opened = las.open_source(shared_data / name)
    assert cim.crs.code(opened.crs) == code
    assert opened.crs_source == source


def test_user_defined_crs_in_feet_is_understood(shared_data: Path) -> None:
    opened = las.open_source(shared_data / "autzen" / "autzen_trim.laz")
    assert opened.crs.is_projected
    assert cim.crs.linear_unit_factor(opened.crs) == pytest.approx(0.3048)


def test_copc_query_by_bounds_matches_a_brute_force_filter(shared_data: Path) -> None:
    path = shared_data / "edge-cases" / "1.2-with-color.copc.laz"
    everything = cim.read(path)
    b = everything.bounds
    box = cim.Bounds(b.minx, b.miny, b.minz, (b.minx + b.maxx) / 2, (b.miny + b.maxy) / 2, b.maxz)
    inside = (everything.x <= box.maxx) & (everything.y <= box.maxy)
    queried = cim.read(path, bounds=box)
    assert 0 < len(queried) == int(inside.sum()) < len(everything)
    assert set(np.round(queried.gps_time, 6)) == set(np.round(everything.gps_time[inside], 6))


def test_extra_dimensions_and_high_classes_are_read(shared_data: Path) -> None:
    cloud = cim.read(shared_data / "edge-cases" / "las_with_several_extra_byte_bloc.laz")
    assert cloud.has("Deviation") and cloud.has("nir")
    assert int((cloud.classification == 65).sum()) == 10


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.laz: file not found"):
        cim.read(tmp_path / "nope.laz")


def test_not_a_las_file(tmp_path: Path) -> None:
    bad = tmp_path / "text.laz"
    bad.write_text("hello, I am not a point cloud")
    with pytest.raises(InputError, match="text.laz: not a readable LAS/LAZ file"):
        cim.read(bad)


def test_truncated_laz_is_reported_with_the_file_name(repo_data: Path, tmp_path: Path) -> None:
    source = repo_data / "delft" / "ahn3_cropped_2.laz"
    truncated = tmp_path / "truncated.laz"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.laz: .*(truncated|corrupt)"):
        cim.read(truncated)


def test_a_damaged_chunk_table_is_read_in_sequence_and_refuses_ranges(repo_data: Path, tmp_path: Path) -> None:
    """LAZ files are read through their chunk table; where it does not fit the point data (here: garbage written
    over it) the file is still read whole, in sequence, and a range of it is refused with one line."""
    source = repo_data / "delft" / "ahn3_cropped_2.laz"
    data = bytearray(source.read_bytes())
    start = laspy.open(source).header.offset_to_point_data
    (table,) = struct.unpack("<q", data[start:start + 8])
    data[table + 8:table + 40] = b"\xff" * 32
    damaged = tmp_path / "damaged.laz"
    damaged.write_bytes(bytes(data))
    whole, intact = cim.read(damaged), cim.read(source)
    assert len(whole) == 208432
    for name in intact.names:
        np.testing.assert_array_equal(whole[name], intact[name])
    with pytest.raises(InputError, match="damaged.laz: its LAZ chunk table is missing or damaged"):
        list(las.iter_chunks(damaged, points=range(100_000, 150_000)))


def test_header_that_claims_more_points_than_the_file_holds(repo_data: Path, tmp_path: Path) -> None:
    cloud = cim.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs="EPSG:7415")[:1000]
    path = cim.write(tmp_path / "liar.las", cloud)
    data = bytearray(path.read_bytes())
    # LAS 1.4: legacy count at byte 107 (u32), 64-bit count at byte 247 (u64)
    data[107:111] = struct.pack("<I", 5000)
    data[247:255] = struct.pack("<Q", 5000)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="liar.las: .*(5000|truncated)"):
        cim.read(path)


def test_writing_nan_coordinates_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    cloud = cim.PointCloud.from_xyz(np.array([[0.0, 0.0, 0.0], [1.0, np.nan, 2.0]]))
    with pytest.raises(InputError, match="NaN or infinite"):
        cim.write(tmp_path / "nan.laz", cloud)
    assert list(tmp_path.iterdir()) == []


def test_invalid_header_scale_is_refused(repo_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "badscale.laz"
    shutil.copy(repo_data / "delft" / "ahn3_cropped_2.laz", path)
    data = bytearray(path.read_bytes())
    data[131:139] = struct.pack("<d", float("nan"))  # x scale factor
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"badscale.laz: header scale \[nan, .* is not finite"):
        las.open_source(path)


def test_gps_time_is_stored_as_adjusted_standard_and_read_back_as_gps_seconds(tmp_path: Path) -> None:
    gps = 1.4e9 + np.arange(5) * 0.25  # GPS seconds (cim's time base)
    week = np.arange(5) * 100.0  # GPS week seconds: below one week, stored as they are
    for name, values, adjusted in (("full.laz", gps, True), ("week.laz", week, False)):
        cloud = cim.PointCloud({"x": np.arange(5.0), "y": np.zeros(5), "z": np.zeros(5), "gps_time": values})
        path = las.write(tmp_path / name, cloud, crs=cim.crs.resolve("EPSG:25832+7837"))
        raw = laspy.read(path)
        assert (raw.header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD) == adjusted
        assert np.abs(np.asarray(raw.gps_time)).max() < 1e9  # adjusted values are small
        np.testing.assert_allclose(las.read(path)["gps_time"], values, atol=1e-6)
