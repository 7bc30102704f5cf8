"""Tile chains: one task per tile, per-stage records and spans, compact checkpoints, resume from them, and
products that are re-made when they go missing or change."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import cim
from cim.columns import append_frame, read_frames
from cim.pipeline.execute import JobRun, _column_digests, load_checkpoint, run_job, save_checkpoint, summarize
from cim.pipeline.job import load_job
from cim.points import PointCloud
from cim.tiling import TileGrid, load_tile
from tests.helpers import REPO, delft_job, ground_dsm_stages, product_digests, write_job


def _run(tmp_path: Path, out: Path, resolution: float = 1.0, force: bool = False) -> JobRun:
    """One Delft file (208k points, three 100 m tiles): classify.ground, raster.dsm, then write.las."""
    files = (REPO / "data" / "delft" / "ahn3_cropped_2.laz").as_posix()
    body = delft_job(out, extra=ground_dsm_stages(resolution), files=files)
    return run_job(load_job(write_job(tmp_path / f"job{resolution}.toml", body)), scheduler="threads", workers=2,
                   force=force)


def _statuses(run: JobRun) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for outcome in run.report.outcomes.values():
        found.setdefault(outcome.stage, set()).add(outcome.status)
    return found


def test_columns_round_trip_bit_exact_and_compress_las_coordinates(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 50_000
    columns = {"x": rng.integers(0, 200_000, n) * 0.001 + 85000.0,
               "gps": np.cumsum(rng.uniform(0, 1e-4, n)) + 3e8,
               "cls": rng.integers(0, 30, n).astype("u1"), "flag": rng.random(n) < 0.1,
               "odd": rng.normal(size=n).astype(">f4"), "nan": np.where(rng.random(n) < 0.5, np.nan, 1.5)}
    path = tmp_path / "a.cols"
    append_frame(path, columns, {"chunk": 3}, quanta={"x": (0.001, 85000.0), "gps": (0.001, 0.0)})
    append_frame(path, {k: v[:10] for k, v in columns.items()}, {"chunk": 4})
    frames = list(read_frames(path))
    assert [meta["chunk"] for meta, _ in frames] == [3, 4]
    for name, values in columns.items():
        assert frames[0][1][name].dtype == values.dtype
        assert frames[0][1][name].tobytes() == values.tobytes()  # bit-exact (gps is not on the 0.001 grid)
        assert frames[1][1][name].tobytes() == values[:10].tobytes()
    x_only = tmp_path / "x.cols"
    append_frame(x_only, {"x": columns["x"]}, quanta={"x": (0.001, 85000.0)})
    assert x_only.stat().st_size < 0.4 * columns["x"].nbytes  # stored as shuffled int32, not as float64 bits


def test_one_chain_per_tile_with_stage_spans_and_a_compact_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "o"
    first = _run(tmp_path, out)
    assert first.report.ok and first.tiles == 3
    chains = [o for o in first.report.outcomes.values() if o.stage == "tile.io" and o.key.startswith("chain/")
              and not o.key.endswith("/checkpoint")]
    assert len(chains) == first.tiles  # one task per tile, not one per (stage, tile)
    steps = [o for o in first.report.outcomes.values()
             if o.stage in ("classify.ground", "raster.dsm", "write.las") and not o.key.endswith("/finish")]
    assert len(steps) == 3 * first.tiles and {o.status for o in steps} == {"done"}
    for tile in {o.key.split("/")[1] for o in steps}:
        spans = [o.result["span"] for o in steps if o.key.endswith(tile)]
        assert all(a <= b for a, b in spans) and all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    timeline = summarize(first)["timeline"]["tasks"]
    ran = [t for t in timeline if t["stage"] in ("classify.ground", "raster.dsm", "write.las") and t["tile"]]
    assert len(ran) == len(steps) and all(t["worker"] and 0 <= t["start"] <= t["end"] for t in ran)
    assert {t["tile"] for t in timeline if t["stage"] == "tile.io"} == {o.key.split("/")[1] for o in steps}
    ground = [o for o in steps if o.stage == "classify.ground"]
    checkpoints = sorted((out / ".cim" / "checkpoints").glob("*.cols"))
    assert len(checkpoints) == first.tiles
    assert all(any(p.endswith(".cols") for p in o.result["outputs"]) for o in ground)
    meta, columns = next(read_frames(checkpoints[0]))
    assert meta["mode"] == "delta" and list(columns) == ["classification"]  # only what the classifier changed
    # the checkpoint holds the classes write.las wrote for the tile's core points (in the same order)
    key = checkpoints[0].stem
    grid = TileGrid(100.0, 10.0)
    cloud = load_tile(sorted((out / ".cim" / "parts").iterdir()), grid.tile_from_key(key), cim.crs.resolve("EPSG:7415"))
    written = cim.read(out / "las" / f"{key}.laz")
    np.testing.assert_array_equal(written.classification, columns["classification"][cloud["core"]])
    assert not np.array_equal(written.classification, cloud.classification[cloud["core"]])  # the stage did work


def test_changed_stage_reruns_from_the_checkpoint_and_products_are_remade(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _run(tmp_path, out)
    digests = product_digests(out)
    second = _run(tmp_path, out, resolution=2.0)
    status = _statuses(second)
    assert status["raster.dsm"] == {"done"} and status["classify.ground"] == {"skipped"}
    assert status["write.las"] == {"skipped"} and status["tile"] == {"skipped"}
    back = _run(tmp_path, out)
    assert _statuses(back)["classify.ground"] == {"skipped"} and product_digests(out) == digests

    laz = sorted((out / "las").glob("*.laz"))[1]
    with open(laz, "r+b") as handle:
        handle.truncate(laz.stat().st_size // 2)
    tif = sorted((out / "dsm").glob("*.tif"))[0]
    stat = tif.stat()
    data = bytearray(tif.read_bytes())
    data[-1] ^= 0xFF  # same size; mtime set back: only the checksum can tell
    tif.write_bytes(bytes(data))
    os.utime(tif, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    remade = _run(tmp_path, out)
    done = sorted(o.key for o in remade.report.outcomes.values() if o.status == "done" and "/" in o.key
                  and not o.key.startswith("chain"))
    assert f"02-write.las/{laz.stem}" in done and f"01-raster.dsm/{tif.stem}" in done
    assert "00-classify.ground/" + laz.stem not in done  # started from the checkpoint
    assert product_digests(out) == digests


def test_missing_checkpoint_reruns_the_chain_from_the_parts(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _run(tmp_path, out)
    digests = product_digests(out)
    checkpoint = sorted((out / ".cim" / "checkpoints").glob("*.cols"))[0]
    checkpoint.unlink()
    again = _run(tmp_path, out)
    done = {o.key for o in again.report.outcomes.values() if o.status == "done"}
    assert f"00-classify.ground/{checkpoint.stem}" in done and checkpoint.is_file()
    assert product_digests(out) == digests


def test_scratch_is_cleared_after_its_finish_and_a_finish_rerun_rebuilds_it(tmp_path: Path) -> None:
    out = tmp_path / "o"
    files = (REPO / "data" / "delft" / "ahn3_cropped_2.laz").as_posix()
    job = load_job(write_job(tmp_path / "j.toml", delft_job(out, extra='[[stages]]\ntype = "tiles.pointcloud"\n',
                                                            files=files)))
    first = run_job(job, scheduler="threads", workers=2)
    scratch = job.stages_of("tiles.pointcloud")[0].scratch_dir(out)
    assert first.report.ok and scratch.parent.is_dir() and not scratch.exists()  # only its finish read it
    digests = product_digests(out)
    tileset = out / "3dtiles" / "pointcloud" / "tileset.json"
    tileset.unlink()  # the finish must run again, and it needs every tile's scratch
    again = run_job(job, scheduler="threads", workers=2)
    assert again.report.ok, [o.error for o in again.report.outcomes.values() if o.error]
    status = _statuses(again)
    assert status["tiles.pointcloud"] == {"done"} and status["write.las"] == {"skipped"}
    assert product_digests(out) == digests



def test_a_failing_step_is_reported_with_its_key_even_when_its_cause_does_not_pickle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")  # pyogrio's error for it does not survive Dask's error pickling
    # the planning guard refuses such a file before any work; here it goes bad after planning (replaced mid-run)
    monkeypatch.setattr("cim.guards.check_footprints", lambda *args: None)
    monkeypatch.setattr("cim.stages.buildings._excess", lambda *args: None)  # the planning look at large footprints
    files = (REPO / "data" / "delft" / "ahn3_cropped_2.laz").as_posix()
    extra = f'[[stages]]\ntype = "raster.dsm"\n\n[[stages]]\ntype = "buildings.lod1"\nfootprints = "{bad}"\n'
    job = load_job(write_job(tmp_path / "j.toml", delft_job(tmp_path / "o", files=files, extra=extra)))
    result = run_job(job, scheduler="threads", workers=1)
    failed = result.report.by_status("failed")
    assert len(failed) == 1 and failed[0].key.startswith("01-buildings.lod1/"), [(o.key, o.error) for o in failed]
    assert failed[0].error.startswith(f"{bad}: cannot read footprints")


def test_checkpoint_of_removed_points_is_full_and_of_changed_classes_a_delta(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = PointCloud({"x": rng.random(1000), "y": rng.random(1000), "z": rng.random(1000),
                       "classification": np.ones(1000, np.uint8)}, cim.crs.resolve("EPSG:7415"))
    digests = _column_digests(base)
    kept = PointCloud({n: base[n][::2] for n in base.names}, base.crs)  # an outlier filter removed half
    classified = PointCloud({**{n: base[n] for n in base.names}, "classification": np.full(1000, 2, np.uint8)},
                            base.crs)
    for cloud, mode, stored in [(kept, "full", set(base.names)), (classified, "delta", {"classification"})]:
        path = tmp_path / f"{mode}.cols"
        save_checkpoint(path, cloud, len(base), digests)
        meta, columns = next(read_frames(path))
        assert meta["mode"] == mode and set(columns) == stored
        back = load_checkpoint(path, base)
        assert all(np.array_equal(back[n], cloud[n]) for n in base.names)
