"""Chains planned from the inputs' header bounds start as soon as the partitions of their neighbourhood exist, not
after the whole partition (issue 12); tiles a header box promised but no point holds produce nothing; a file whose
points lie outside its header's bounds fails alone, and no chain runs on its tiles' partial inputs."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import laspy
import numpy as np
import pytest

import cim
import cim.pipeline.execute
from cim.pipeline.execute import run_job
from cim.pipeline.job import load_job
from cim.pipeline.planned_tiles import plan_tiles, span
from cim.points import Bounds
from cim.tiling import TileGrid

from tests.helpers import tiling_job

SIZE, BUFFER = 50.0, 2.0
X0, Y0 = 500000.0, 5480000.0  # multiples of the tile size
CRS = "EPSG:25832+7837"


def _write(path: Path, boxes: list[tuple[int, int]], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A LAS file with ``n`` points spread over each tile (column, row after X0, Y0) of ``boxes``, 0.5 m inside
    its edges; returns the points' x, y."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for ix, iy in boxes:
        xs.append(X0 + ix * SIZE + rng.uniform(0.5, SIZE - 0.5, n))
        ys.append(Y0 + iy * SIZE + rng.uniform(0.5, SIZE - 0.5, n))
    x, y = np.concatenate(xs), np.concatenate(ys)
    cim.write(path, cim.PointCloud({"x": x, "y": y, "z": rng.uniform(230, 260, len(x))}, cim.crs.resolve(CRS)))
    return x, y


def _job(tmp_path: Path, folder: Path) -> Path:
    return tiling_job(tmp_path / "job.toml", tmp_path / "out", folder / "*.las", size=SIZE, buffer=BUFFER)


def _key(ix: int, iy: int) -> str:
    return f"{int(X0 // SIZE) + ix}_{int(Y0 // SIZE) + iy}"


def _row(folder: Path, slow_points: int = 300) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Files f0 .. f5, file k over tile (k, 0) only; f0 has the most points (its partition is submitted first)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {f"f{k}": _write(folder / f"f{k}.las", [(k, 0)], slow_points if k == 0 else 300, k) for k in range(6)}


def test_a_chain_waits_only_for_its_neighbourhood_and_starts_before_a_slow_partition_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _row(tmp_path / "in", slow_points=3000)
    partition_file = cim.pipeline.execute.partition_file

    def slow_f0(source, *args, **kwargs):  # noqa: ANN001, ANN202 - the wrapped function's own signature
        if source.path.stem == "f0":
            time.sleep(1.5)
        return partition_file(source, *args, **kwargs)

    monkeypatch.setattr(cim.pipeline.execute, "partition_file", slow_f0)
    run = run_job(load_job(_job(tmp_path, tmp_path / "in")), scheduler="threads", workers=2)
    assert run.report.ok and run.tiles == 6 and run.points == 3000 + 5 * 300
    timeline = {t["task"]: t for t in run.report.timeline()["tasks"]}
    for k in range(6):
        # independent truth: the files with a point in the 3 x 3 tiles around tile k
        lo, hi = X0 + (k - 1) * SIZE, X0 + (k + 2) * SIZE
        near = {name for name, (x, _) in files.items() if np.any((x >= lo) & (x < hi))}
        deps = {d.split("-", 1)[1] for d in timeline[f"chain/{_key(k, 0)}"]["deps"]}
        assert deps == near, k
    slow_end = timeline["partition/0000-f0"]["end"]
    started_early = [k for k in range(2, 6) if timeline[f"chain/{_key(k, 0)}"]["start"] < slow_end]
    assert started_early and set(started_early) <= {2, 3, 4, 5}  # tiles away from f0 did not wait for it (a
    # busy machine may delay some past its end: one is enough; with the whole partition first, none starts early)
    assert timeline[f"chain/{_key(1, 0)}"]["start"] >= slow_end  # its neighbour f0 it did wait for


def test_tiles_the_header_box_promised_but_no_point_holds_produce_nothing_and_resume_keeps_all(
        tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "diagonal.las", [(0, 0), (1, 1)], 400, 1)  # its box covers 4 tiles, points lie in 2
    job = _job(tmp_path, folder)
    run = run_job(load_job(job), scheduler="threads", workers=2)
    assert run.report.ok and run.tiles == 2 and run.empty_tiles == 2 and run.points == 800
    made = sorted(p.name for p in (tmp_path / "out" / "las").glob("*.laz"))
    assert made == sorted(f"{_key(ix, iy)}.laz" for ix, iy in [(0, 0), (1, 1)])
    assert not [k for k in run.report.outcomes if _key(1, 0) in k or _key(0, 1) in k]
    for key in (_key(0, 0), _key(1, 1)):
        assert len(cim.read(tmp_path / "out" / "las" / f"{key}.laz")) == 400
    again = run_job(load_job(job), scheduler="threads", workers=2)
    assert again.report.ok and again.tiles == 2 and not again.report.by_status("done")


def _lie_about_max_x(path: Path, max_x: float) -> None:
    """Overwrite the header's maximum x (LAS 1.2+: bytes 179..186) with ``max_x``."""
    data = bytearray(path.read_bytes())
    data[179:187] = struct.pack("<d", max_x)
    path.write_bytes(bytes(data))
    assert laspy.read(path).header.maxs[0] == max_x


def test_a_file_with_points_outside_its_header_bounds_fails_alone_and_its_tiles_do_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _row(folder)
    (folder / "f3.las").unlink()
    (folder / "f4.las").unlink()
    x, _ = _write(folder / "liar.las", [(3, 0), (4, 0)], 300, 9)
    _lie_about_max_x(folder / "liar.las", X0 + 3 * SIZE + 20.0)  # the header says: tile 3 only
    run = run_job(load_job(_job(tmp_path, folder)), scheduler="threads", workers=2, keep_going=True)
    assert not run.report.ok
    failures = {o.key: o.error for o in run.report.by_status("failed")}
    assert list(failures) == ["partition/0004-liar"]
    assert "liar.las" in failures["partition/0004-liar"]
    assert f"{int(np.sum(x >= X0 + 4 * SIZE))} points lie outside the bounds its header states" in \
        failures["partition/0004-liar"]
    assert not (tmp_path / "out" / ".cim" / "parts" / "0004-liar").exists()
    status = {k.split("/")[1]: (o.status, o.error) for k, o in run.report.outcomes.items() if "write.las/" in k}
    assert _key(4, 0) not in status  # no header box meets tile 4: not planned
    for k in (2, 3):  # tiles whose neighbourhood the liar's box meets: not run on partial inputs
        assert status[_key(k, 0)] == ("cancelled", "not run: partition/0004-liar failed")
        assert not (tmp_path / "out" / "las" / f"{_key(k, 0)}.laz").exists()
    for k in (0, 1, 5):
        assert status[_key(k, 0)][0] == "done"


def test_a_header_short_of_its_points_by_less_than_half_the_scale_is_taken_as_rounding(tmp_path: Path) -> None:
    """Writers that take the bounds before rounding the coordinates to the scale state them up to half a scale
    unit short of the points: a point on a tile edge then lies in a tile the stated box does not meet. That is
    rounding, not a lying header: the file is planned with its box grown by half the scale and its point kept."""
    folder = tmp_path / "in"
    folder.mkdir()
    x, y = _write(folder / "edge.las", [(0, 0)], 300, 3)
    edge = X0 + SIZE  # the first x of the next tile
    x, y = np.append(x, edge), np.append(y, Y0 + 10.0)
    cim.write(folder / "edge.las", cim.PointCloud({"x": x, "y": y, "z": np.full(len(x), 240.0)},
                                                  cim.crs.resolve(CRS)))
    scale = laspy.read(folder / "edge.las").header.scales[0]
    _lie_about_max_x(folder / "edge.las", edge - 0.4 * scale)  # the bounds of the unrounded coordinates
    run = run_job(load_job(_job(tmp_path, folder)), scheduler="threads", workers=2)
    assert run.report.ok
    tiles = {t: len(laspy.read(tmp_path / "out" / "las" / f"{t}.laz").x) for t in (_key(0, 0), _key(1, 0))}
    assert tiles == {_key(0, 0): 300, _key(1, 0): 1}


def test_plan_spreads_header_counts_over_the_tiles_by_area_and_clips_to_the_area() -> None:
    grid = TileGrid(100.0, 10.0)
    box = Bounds(50.0, 0.0, 0.0, 250.0, 99.0, 1.0)  # 200 m x 99 m over columns 0, 1, 2 of row 0
    plan = plan_tiles(grid, {"a": (box, 1000), "b": (Bounds(420.0, 10.0, 0.0, 430.0, 20.0, 1.0), 5)}, None)
    assert [t.key for t in plan.tiles] == ["0_0", "1_0", "2_0", "4_0"]
    assert plan.estimates == pytest.approx({"0_0": 250.0, "1_0": 500.0, "2_0": 250.0, "4_0": 5.0})
    assert plan.parts == {"0_0": ["a"], "1_0": ["a"], "2_0": ["a"], "4_0": ["b"]}  # 3_0 lies between: no tile
    clipped = plan_tiles(grid, {"a": (box, 1000), "b": (Bounds(420.0, 10.0, 0.0, 430.0, 20.0, 1.0), 5)},
                         (120.0, 0.0, 400.0, 100.0))
    assert [t.key for t in clipped.tiles] == ["1_0", "2_0"] and clipped.spans == {"a": (1, 0, 2, 0)}


def test_span_of_a_single_point_file_and_of_a_box_on_the_area_edge() -> None:
    grid = TileGrid(100.0, 10.0)
    point = Bounds(150.0, 250.0, 0.0, 150.0, 250.0, 0.0)
    assert span(grid, point, None) == span(grid, point, (0.0, 0.0, 1000.0, 1000.0)) == (1, 2, 1, 2)
    assert span(grid, point, (0.0, 0.0, 150.0, 250.0)) is None  # the area's max edges are not in it
    assert span(grid, Bounds(0.0, 0.0, 0.0, 500.0, 500.0, 1.0), (0.0, 0.0, 200.0, 200.0)) == (0, 0, 1, 1)


@pytest.mark.parametrize("name", ["edge-cases/las_with_several_extra_byte_bloc.laz", "edge-cases/sample_c.las",
                                  "edge-cases/1.2-with-color.copc.laz"])
def test_the_dimensions_from_a_las_header_are_those_of_its_points(shared_data: Path, name: str) -> None:
    source = cim.io.las.open_source(shared_data / name, "EPSG:25832")
    schema, first = source.schema_cloud(), next(iter(source.chunks(5)))
    assert schema.names == first.names and len(schema.names) > 3
    assert {n: schema[n].dtype for n in schema.names} == {n: first[n].dtype for n in first.names}
