"""Every LAS dimension survives read.las -> classify.ground -> write.las; withheld points are left out of
processing by default and written back with their flag and class."""

from __future__ import annotations

from pathlib import Path

import laspy
import numpy as np
import pytest

from cim.io import las
from cim.pipeline.execute import run
from tests.helpers import write_job

CRS = "EPSG:25832"
#: Every field a LAS 1.4 point format 6/8 record has besides coordinates and classification.
FIELDS = ("intensity", "return_number", "number_of_returns", "synthetic", "key_point", "withheld", "overlap",
          "scanner_channel", "scan_direction_flag", "edge_of_flight_line", "user_data", "scan_angle",
          "point_source_id")
EXTRAS = {  # name: (type, description, scale, offset)
    "amplitude": ("u2", "echo amplitude", None, None),
    "deviation": ("i1", "pulse shape deviation", None, None),
    "range": ("i4", "range (scaled)", 0.001, 100.0),
    "reflectance": ("f4", "reflectance in dB", None, None),
}


def _terrain_file(path: Path, point_format: int, seed: int = 3) -> laspy.LasData:
    """A 60 m x 60 m sloped terrain with box buildings, every field random, 10 % of the points withheld (class 0,
    so processing would change their class), extra bytes of four types (one scaled, with an offset)."""
    rng = np.random.default_rng(seed)
    n = 12_000
    x, y = rng.uniform(0, 60, n), rng.uniform(0, 60, n)
    z = 200.0 + 0.05 * x + rng.normal(0, 0.03, n)
    roof = ((x % 30) > 8) & ((x % 30) < 20) & ((y % 30) > 8) & ((y % 30) < 20) & (rng.random(n) < 0.8)
    z[roof] += 9.0
    header = laspy.LasHeader(point_format=point_format, version="1.4")
    for name, (kind, description, scale, offset) in EXTRAS.items():
        header.add_extra_dim(laspy.ExtraBytesParams(
            name=name, type=kind, description=description, scales=None if scale is None else [scale],
            offsets=None if offset is None else [offset]))
    header.scales = np.array([0.0025, 0.0025, 0.001])
    header.offsets = np.array([691000.0, 5_334_000.0, 100.0])
    header.global_encoding.gps_time_type = laspy.header.GpsTimeType.STANDARD
    header.add_crs(__import__("pyproj").CRS(CRS))
    data = laspy.LasData(header)
    data.x, data.y, data.z = x + 691_000.0, y + 5_334_000.0, z
    number = rng.integers(1, 16, n)
    data.number_of_returns = number
    data.return_number = np.minimum(rng.integers(1, 16, n), number)
    data.intensity = rng.integers(0, 65535, n)
    for flag in ("synthetic", "key_point", "overlap", "scan_direction_flag", "edge_of_flight_line"):
        data[flag] = rng.random(n) < 0.5
    data.withheld = rng.random(n) < 0.1
    data.scanner_channel = rng.integers(0, 4, n)
    data.classification = np.where(data.withheld, 0, rng.choice([0, 1, 5, 64], n))
    data.user_data = rng.integers(0, 256, n)
    data.scan_angle = rng.integers(-30000, 30000, n)
    data.point_source_id = rng.integers(0, 65535, n)
    data.gps_time = 3.0e8 + rng.permutation(n) * 1e-3  # unique: identifies each point
    if point_format >= 7:
        for colour in ("red", "green", "blue", *(["nir"] if point_format == 8 else [])):
            data[colour] = rng.integers(0, 65535, n)
    data.amplitude = rng.integers(0, 65535, n)
    data.deviation = rng.integers(-128, 127, n)
    data["range"] = np.round(rng.uniform(0, 500, n), 3)
    data.reflectance = rng.normal(-10, 3, n).astype("f4")
    data.write(path)
    return laspy.read(path)


def _job(tmp_path: Path, source: Path, *, withheld: str = "skip", per_source: bool = False) -> Path:
    out = tmp_path / f"out-{withheld}-{per_source}"
    return write_job(tmp_path / f"{out.name}.toml", f"""
[job]
name = "dims"
output = "{out.as_posix()}"

[[stages]]
type = "read.las"
files = ["{source.as_posix()}"]
withheld = "{withheld}"

[[stages]]
type = "tile"
size = 50.0
buffer = 10.0

[[stages]]
type = "classify.ground"

[[stages]]
type = "write.las"
per_source = {str(per_source).lower()}
""")


def _sorted_values(parts: list[laspy.LasData], name: str) -> np.ndarray:
    values = np.concatenate([np.asarray(p[name]) for p in parts])
    order = np.argsort(np.concatenate([np.asarray(p.gps_time) for p in parts]))
    return values[order]


@pytest.mark.parametrize("point_format", [6, 8])
def test_every_field_flag_and_extra_byte_round_trips_through_a_ground_job(tmp_path: Path, point_format: int) -> None:
    source = tmp_path / f"pf{point_format}.las"
    original = _terrain_file(source, point_format)
    result = run(_job(tmp_path, source), scheduler="threads", workers=1)
    assert result.report.ok, result.report.by_status("failed")
    parts = [laspy.read(f) for f in sorted((result.job.out_dir / "las").glob("*.laz"))]
    assert len(parts) == 4  # 2 x 2 tiles of 50 m
    assert sum(len(p.points) for p in parts) == len(original.points)
    header = parts[0].header
    assert header.point_format.id == point_format
    assert header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD
    described = {p.name: p for p in las.extra_bytes_params(header)}
    for name, (kind, description, scale, offset) in EXTRAS.items():
        assert (described[name].type, described[name].description) == (np.dtype(kind), description)
        assert (described[name].scales, described[name].offsets) == (
            (None, None) if scale is None else (pytest.approx([scale]), pytest.approx([offset])))
    order = np.argsort(np.asarray(original.gps_time))
    names = [*FIELDS, *EXTRAS] + (["red", "green", "blue", "nir"] if point_format == 8 else [])
    for name in names:
        np.testing.assert_array_equal(_sorted_values(parts, name), np.asarray(original[name])[order], err_msg=name)
    for axis in "xyz":  # written on cim's 1 mm grid (the tile files' own scale)
        np.testing.assert_allclose(_sorted_values(parts, axis), np.asarray(original[axis])[order], atol=6e-4)
    # GPS seconds pass through cim's time base (+1e9 s): equal to a few 1e-7 s
    np.testing.assert_allclose(_sorted_values(parts, "gps_time"), np.asarray(original.gps_time)[order], atol=1e-6)

    withheld = np.asarray(original.withheld, dtype=bool)[order]
    before = np.asarray(original.classification)[order]
    after = _sorted_values(parts, "classification")
    np.testing.assert_array_equal(after[withheld], before[withheld])  # class 0 kept: never processed
    # the stage's change: ground -> 2, unclassified (0) -> 1, any other class kept
    processed, was = after[~withheld], before[~withheld]
    assert np.all((processed == 2) | (processed == np.where(was == 0, 1, was)))
    assert 0.3 < np.mean(processed == 2) < 0.9


def test_withheld_points_do_not_change_the_classification_of_the_others(tmp_path: Path) -> None:
    source = tmp_path / "pf6.las"
    original = _terrain_file(source, 6)
    skipped = run(_job(tmp_path, source), scheduler="threads", workers=1)
    # truth: the same file without its withheld points
    without = tmp_path / "without" / "pf6.las"
    without.parent.mkdir()
    kept = laspy.LasData(original.header)
    kept.points = original.points[~np.asarray(original.withheld, dtype=bool)]
    kept.write(without)
    truth = run(_job(tmp_path / "without", without), scheduler="threads", workers=1)
    parts = [laspy.read(f) for f in sorted((skipped.job.out_dir / "las").glob("*.laz"))]
    truth_parts = [laspy.read(f) for f in sorted((truth.job.out_dir / "las").glob("*.laz"))]
    withheld = _sorted_values(parts, "withheld").astype(bool)
    np.testing.assert_array_equal(_sorted_values(parts, "classification")[~withheld],
                                  _sorted_values(truth_parts, "classification"))
    # 'keep' processes them: they get ground / non-ground classes like the others
    kept_run = run(_job(tmp_path, source, withheld="keep"), scheduler="threads", workers=1)
    kept_parts = [laspy.read(f) for f in sorted((kept_run.job.out_dir / "las").glob("*.laz"))]
    classes = _sorted_values(kept_parts, "classification")[_sorted_values(kept_parts, "withheld").astype(bool)]
    assert set(np.unique(classes)) == {1, 2} and len(classes) == int(np.sum(original.withheld))


def test_per_source_mode_writes_each_input_with_its_own_grid_and_every_point(tmp_path: Path) -> None:
    first, second = tmp_path / "a.las", tmp_path / "b.las"
    one = _terrain_file(first, 8, seed=3)
    two = _terrain_file(second, 8, seed=4)
    job = _job(tmp_path, first, per_source=True)
    job.write_text(job.read_text().replace(f'files = ["{first.as_posix()}"]',
                                           f'files = ["{first.as_posix()}", "{second.as_posix()}"]'))
    result = run(job, scheduler="threads", workers=1)
    assert result.report.ok, result.report.by_status("failed")
    written = sorted(p.name for p in (result.job.out_dir / "las").iterdir())
    assert written == ["a.laz", "b.laz"]
    for original, name in ((one, "a.laz"), (two, "b.laz")):
        back = laspy.read(result.job.out_dir / "las" / name)
        assert len(back.points) == len(original.points)
        np.testing.assert_array_equal(back.header.scales, original.header.scales)
        np.testing.assert_array_equal(back.header.offsets, original.header.offsets)
        order, back_order = np.argsort(np.asarray(original.gps_time)), np.argsort(np.asarray(back.gps_time))
        for name in ("X", "Y", "Z", *FIELDS, *EXTRAS, "red", "green", "blue", "nir"):
            np.testing.assert_array_equal(np.asarray(back[name])[back_order], np.asarray(original[name])[order],
                                          err_msg=name)
        np.testing.assert_allclose(np.asarray(back.gps_time)[back_order], np.asarray(original.gps_time)[order],
                                   atol=1e-6)


def test_per_source_refuses_inputs_of_one_name(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "x.las", tmp_path / "b" / "x.las"
    for path, seed in ((first, 3), (second, 4)):
        path.parent.mkdir()
        _terrain_file(path, 6, seed=seed)
    job = _job(tmp_path, first, per_source=True)
    job.write_text(job.read_text().replace(f'files = ["{first.as_posix()}"]',
                                           f'files = ["{first.as_posix()}", "{second.as_posix()}"]'))
    result = run(job, scheduler="threads", workers=1)
    failures = result.report.by_status("failed")
    assert failures and "another input also writes x.laz" in failures[0].error
    assert not list((result.job.out_dir / "las").glob("*.laz"))


def test_all_extra_bytes_vlrs_are_read(shared_data: Path) -> None:
    path = shared_data / "edge-cases" / "las_with_several_extra_byte_bloc.laz"
    cloud = next(las.iter_chunks(path, chunk_size=5000))
    described = {p.name: p.description for p in las.extra_bytes_params(las.open_source(path).header)}
    assert described == {"Deviation": "Pulse shape deviation", "confidence": "confidence values"}
    raw = laspy.read(path).points[:5000]
    np.testing.assert_array_equal(cloud["Deviation"], raw["Deviation"])
    np.testing.assert_array_equal(cloud["confidence"], raw["ExtraBytes"])  # laspy leaves the 2nd VLR unnamed
    assert cloud["confidence"].dtype == np.uint8


def test_per_source_joins_an_input_chunk_by_chunk_in_its_order(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The finish holds one chunk of an input at a time (here 1,000 of its 12,000 points, spread over 4 tiles),
    writes every point in the input's own order, and the file equals the one written from a single chunk."""
    source = tmp_path / "a.las"
    original = _terrain_file(source, 8, seed=5)
    held: list[int] = []

    def recording(path: Path, points, **kwargs):  # noqa: ANN001, ANN003, ANN202 - a spy on las.write's chunks
        return write(path, (held.append(len(c)) or c for c in points), **kwargs)

    write = las.write
    monkeypatch.setattr(las, "write", recording)
    outputs = {}
    for chunk in (1000, 1_000_000):
        job = _job(tmp_path / str(chunk), source, per_source=True)
        job.write_text(job.read_text() + f"chunk_size = {chunk}\n")
        result = run(job, scheduler="threads", workers=1)
        assert result.report.ok, result.report.by_status("failed")
        assert result.tiles == 4
        outputs[chunk] = result.job.out_dir / "las" / "a.laz"
    assert held == [1000] * 12 + [12_000]  # twelve chunks of the small size, then the whole input at once
    back = laspy.read(outputs[1000])
    for name in ("X", "Y", "Z", "intensity", "gps_time", *EXTRAS):  # the input's order, point by point
        np.testing.assert_allclose(np.asarray(back[name]), np.asarray(original[name]), atol=1e-6, err_msg=name)
    assert back.header.point_count == 12_000
    np.testing.assert_allclose(back.header.mins, original.header.mins)
    np.testing.assert_allclose(back.header.maxs, original.header.maxs)
    assert outputs[1000].read_bytes() == outputs[1_000_000].read_bytes()
