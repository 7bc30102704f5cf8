"""One large input file partitioned by several tasks, each reading one range of its points (issue 12, item 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import cim
from cim.errors import InputError
from cim.io import las, ply
from cim.io.chunks import task_ranges
from cim.io.readers import Reprojected, in_crs
from cim.threads import limited
from cim.tiling import TileGrid, partition_file
from tests.helpers import REPO, cim_cli, product_digests, write_job
from tests.test_readers import _write_ply

DELFT_2 = REPO / "data" / "delft" / "ahn3_cropped_2.laz"  # 208,432 points, LAZ with fixed chunks of 50,000


def _same_chunks(whole: list[cim.PointCloud], ranged: list[cim.PointCloud]) -> None:
    assert [len(c) for c in ranged] == [len(c) for c in whole]
    for a, b in zip(whole, ranged):
        assert a.names == b.names
        for name in a.names:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("name", ["delft/ahn3_cropped_2.laz", "edge-cases/1.2-with-color.copc.laz",
                                  "edge-cases/sample_c.las", "edge-cases/las_with_several_extra_byte_bloc.laz"])
@pytest.mark.parametrize("threads", [1, 2])
def test_point_ranges_read_the_chunks_a_whole_pass_reads(name: str, threads: int, shared_data: Path) -> None:
    """LAZ with fixed-size chunks, COPC with variable-size ones (one per octree node; lazrs' own seek misplaces
    the stream there), uncompressed LAS, and extra bytes: ranges of whole chunks give the whole pass's chunks,
    decompressed chunk by chunk by a task with one thread and all at once by one with more."""
    source = las.open_source(shared_data / name, "EPSG:7415")
    chunk = max(7, source.point_count // 23)  # not a multiple of the LAZ chunk size: ranges start mid-chunk
    ranges = task_ranges(source, chunk, 3 * chunk)
    assert ranges is not None and len(ranges) >= 4
    assert ranges[0].start == 0 and ranges[-1].stop == source.point_count
    assert all(a.stop == b.start and a.start % chunk == 0 for a, b in zip(ranges, ranges[1:]))
    whole = list(source.chunks(chunk))
    with limited(threads):
        _same_chunks(whole, [c for points in ranges for c in source.chunks(chunk, points=points)])


def test_a_reprojected_source_reads_ranges_of_its_source() -> None:
    """``output_crs``: the transformed chunks of the ranges are those of the whole pass."""
    source = in_crs(las.open_source(DELFT_2, "EPSG:7415"), cim.crs.resolve("EPSG:25831+5709"))
    assert isinstance(source, Reprojected) and source.seekable
    ranges = task_ranges(source, 30_000, 60_000)
    assert len(ranges) == 4
    _same_chunks(list(source.chunks(30_000)), [c for r in ranges for c in source.chunks(30_000, points=r)])


def test_binary_ply_is_split_and_ascii_ply_and_small_files_are_read_whole(tmp_path: Path) -> None:
    original = las.read(DELFT_2, crs="EPSG:7415")[np.arange(0, 208_432, 20)]
    binary = ply.open_source(_write_ply(tmp_path / "b.ply", original), "EPSG:7415")
    text = ply.open_source(_write_ply(tmp_path / "t.ply", original, text=True), "EPSG:7415")
    ranges = task_ranges(binary, 1000, 2500)  # 2,500 rounded up to whole chunks: 3,000
    assert [len(r) for r in ranges] == [3000] * 3 + [len(original) - 9000]
    _same_chunks(list(binary.chunks(1000)), [c for r in ranges for c in binary.chunks(1000, points=r)])
    assert task_ranges(text, 1000, 2500) is None  # every task would parse the whole ASCII file
    assert task_ranges(binary, 1000, len(original)) is None  # one range: the file is read whole


def test_a_copc_file_queried_by_the_job_area_is_read_by_one_query(shared_data: Path) -> None:
    source = las.open_source(shared_data / "edge-cases" / "1.2-with-color.copc.laz")
    assert task_ranges(source, 100, 100, queried=True) is None
    assert len(task_ranges(source, 100, 100, queried=False)) == 11


def _job(tmp_path: Path, name: str, task_points: int) -> Path:
    out = tmp_path / name
    return write_job(tmp_path / f"{name}.toml", f"""
[job]
name = "ranges"
output = "{out.as_posix()}"
crs = "EPSG:7415"

[[stages]]
type = "read.las"
files = ["{DELFT_2.as_posix()}"]
chunk_size = 20000
task_points = {task_points}

[[stages]]
type = "tile"
size = 60.0
buffer = 8.0

[[stages]]
type = "raster.dsm"
resolution = 1.0

[[stages]]
type = "write.las"

[[stages]]
type = "write.las"
folder = "per_source"
per_source = true
""")


def test_a_file_split_into_ranges_gives_the_products_of_one_range(tmp_path: Path) -> None:
    """Tiles with buffers (points from other ranges' parts), a raster, per-tile LAZ and the input rewritten in
    its own point order: byte-identical whether one task or six partition the file."""
    runs = {}
    for name, task_points in (("whole", 10**9), ("split", 40_000)):
        run = cim.run(_job(tmp_path, name, task_points), scheduler="threads", workers=2)
        assert run.report.ok
        partitions = [k for k in run.report.outcomes if k.startswith("partition/")]
        runs[name] = (run, partitions)
    assert len(runs["whole"][1]) == 1 and len(runs["split"][1]) == 6  # 208,432 points in ranges of 40,000
    assert sorted(runs["split"][1]) == [f"partition/0000-ahn3_cropped_2.{k:05d}" for k in range(6)]
    assert runs["whole"][0].points == runs["split"][0].points == 208_432
    whole, split = product_digests(tmp_path / "whole"), product_digests(tmp_path / "split")
    assert len([k for k in whole if k.startswith("las/")]) == runs["whole"][0].tiles >= 8
    assert "per_source/ahn3_cropped_2.laz" in whole
    stac_free = {k: v for k, v in whole.items() if not k.startswith("stac/")}  # the catalog names the job folder
    assert stac_free == {k: v for k, v in split.items() if not k.startswith("stac/")}
    again = cim.run(_job(tmp_path, "split", 40_000), scheduler="threads", workers=2)  # resume keeps every range
    assert {o.status for o in again.report.outcomes.values()} == {"skipped"}
    parts = tmp_path / "split" / ".cim" / "parts"
    cim.run(_job(tmp_path, "whole", 10**9), out=tmp_path / "split", scheduler="threads", workers=2)
    assert [p.name for p in parts.iterdir()] == ["0000-ahn3_cropped_2"]  # the ranges' parts of the earlier plan go
    assert product_digests(tmp_path / "split") == split


def test_a_truncated_file_read_by_ranges_names_itself(tmp_path: Path) -> None:
    data = DELFT_2.read_bytes()
    source = las.open_source(DELFT_2, "EPSG:7415")
    cut = tmp_path / "cut.laz"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    cut_source = las.LasSource(cut, source.header, source.crs, "override", False)
    grid = TileGrid(40.0, 8.0)
    with pytest.raises(InputError, match="cut.laz"):
        partition_file(cut_source, grid, source.crs, tmp_path / "parts", chunk_size=20_000,
                       points=range(160_000, 180_000))
    assert not (tmp_path / "parts").exists()  # no half-written parts folder


def test_fewer_tiles_than_workers_gives_one_line_of_tile_size_advice_that_holds(tmp_path: Path) -> None:
    """250 m tiles over the 72 m x 229 m file: 2 tiles for 4 workers. The advised size, run, gives the tiles the
    advice promises; a job with enough tiles gets no advice."""
    job = _job(tmp_path, "big", 10**9)
    job.write_text(job.read_text().replace("size = 60.0", "size = 250.0").replace('[[stages]]\ntype = "raster.dsm"\n'
                                                                              'resolution = 1.0\n', ""))
    result = cim_cli("run", str(job), "--scheduler", "threads", "--workers", "4")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "big" / "report.json").read_text())
    assert report["tiles"] == 2 and len(report["advice"]) == 1
    line = report["advice"][0]
    assert line in " ".join(result.stdout.split()) and line in (tmp_path / "big" / "cim.log").read_text()
    size, promised = re.search(r"tile size ([0-9.]+) .* would give (\d+) tiles", line).groups()
    assert float(size) == 62.5  # 125 m gives 3 tiles, 250 / 3 cannot be written exactly
    job.write_text(job.read_text().replace("size = 250.0", f"size = {size}"))
    again = cim.run(job, out=tmp_path / "small", scheduler="threads", workers=4)
    assert again.tiles == int(promised) >= 4 and again.advice == []
