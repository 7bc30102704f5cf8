"""tiles.pointcloud's finish as a tree reduction: one task per block of tiles, then a root that merges the block
roots (cim.tiles3d.upper, cim.pipeline.reduction). Truth: the one-task finish (byte for byte), the tileset
checker (boxes contain children, errors decrease, every point exactly once) and the files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cim.io import las
from cim.tiles3d import upper
from cim.tiles3d.check import check_tileset
from test_tiles_helpers import schema_errors, synthetic_cloud

N = 40_000
TILE = 30.0  # the cloud spans 180 m x 180 m: 6-7 tiles a side, so at least 2 x 2 blocks of 4 x 4 tiles


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reduce") / "kl.laz"
    las.write(path, synthetic_cloud(N))
    return path


def _run(source: Path, out: Path, implicit: bool) -> dict:
    from cim.pipeline.execute import run_job, summarize
    from cim.pipeline.job import parse_job

    document = {"job": {"name": "reduce", "output": str(out)}, "stages": [
        {"type": "read.las", "files": [str(source)]},
        {"type": "tile", "size": TILE, "buffer": 0.0},
        {"type": "tiles.pointcloud", "leaf_points": 1000, "extra": ["point_id"], "implicit": implicit}]}
    run = run_job(parse_job(document, out.parent / "job.toml"), scheduler="threads", workers=2)
    assert run.report.ok, [o.error for o in run.report.outcomes.values() if o.error]
    return summarize(run)


def _tile_sizes() -> dict[str, int]:
    """Points per tile (no buffer), counted independently of cim's tiling."""
    cloud = synthetic_cloud(N)
    ix, iy = np.floor(cloud.x / TILE).astype(int), np.floor(cloud.y / TILE).astype(int)
    keys, counts = np.unique(np.stack([ix, iy], 1), axis=0, return_counts=True)
    return {f"{x}_{y}": int(n) for (x, y), n in zip(keys, counts)}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _contents(tileset: Path) -> set[str]:
    """Every content the tileset reaches (through external tilesets), relative to the tileset's folder."""
    found: set[str] = set()

    def walk(tile: dict, base: Path) -> None:
        uri = tile.get("content", {}).get("uri")
        if uri:
            found.add((base / uri).relative_to(tileset.parent).as_posix())
            if uri.endswith(".json"):
                walk(json.loads((base / uri).read_text())["root"], (base / uri).parent)
        for child in tile.get("children", []):
            walk(child, base)

    walk(json.loads(tileset.read_text())["root"], tileset.parent)
    return found


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_blocks_run_as_tasks_and_give_the_one_task_tileset(source, tmp_path, monkeypatch, implicit):
    blocked = _run(source, tmp_path / "blocks" / "out", implicit)
    with monkeypatch.context() as m:
        m.setattr(upper, "BLOCK_LEVELS", 10)  # one block: the whole tree in the finish task
        single = _run(source, tmp_path / "single" / "out", implicit)

    tasks = blocked["timeline"]["tasks"]
    blocks = [t for t in tasks if "/block/" in t["task"]]
    finish = next(t for t in tasks if t["task"].endswith("tiles.pointcloud/finish"))
    assert len(blocks) >= 3 and {t["stage"] for t in blocks} == {"tiles.pointcloud"}
    summary = next(t for t in tasks if t["task"].endswith("tiles.pointcloud/summary"))
    assert summary["end"] <= min(t["start"] for t in blocks) and finish["start"] >= max(t["end"] for t in blocks)
    assert not [t for t in single["timeline"]["tasks"] if "/block/" in t["task"]]
    assert blocked["tiles"] == single["tiles"] >= 36
    chains = sorted((t for t in tasks if t["stage"] == "tile.io"), key=lambda t: t["start"])
    sizes = _tile_sizes()
    # the largest tile first: among the chains the two worker threads started first (they start together)
    assert max(sizes[c["tile"]] for c in chains[:2]) == max(sizes.values())

    folder = Path(blocked["output"]) / "3dtiles" / "pointcloud"
    assert _files(folder) == _files(Path(single["output"]) / "3dtiles" / "pointcloud")
    assert any((folder / "upper").glob(f"{upper.BLOCK_LEVELS}_*.glb"))  # block roots hold points

    for path in [folder / "tileset.json", *sorted(folder.glob("tiles/*/tileset.json"))]:
        assert schema_errors(json.loads(path.read_text()), "tileset.schema.json") == [], path
    report = check_tileset(folder / "tileset.json")
    assert report.ok, report.problems[:5]
    assert report.points == N
    assert report.sums["point_id"] == pytest.approx(N * (N - 1) / 2)
    on_disk = {p for p in _files(folder) if p.endswith((".glb", ".json", ".subtree")) and p != "tileset.json"}
    reached = _contents(folder / "tileset.json")
    if implicit:  # implicit roots name a template; the checker expanded them
        reached = {p for p in reached if "{" not in p}
        on_disk = {p for p in on_disk if p.startswith("upper/") or p.endswith("tileset.json")}
    assert reached == on_disk


def test_a_resume_keeps_the_blocks_and_rebuilds_them_with_the_tiles(source, tmp_path):
    out = tmp_path / "out"
    _run(source, out, False)
    first = _files(out / "3dtiles" / "pointcloud")
    again = _run(source, out, False)
    assert not again["timeline"]["tasks"]  # nothing changed: every chain, block and the finish kept
    (out / "3dtiles" / "pointcloud" / "tileset.json").unlink()
    redone = _run(source, out, False)  # the scratch the blocks read was cleared: tiles and blocks run again
    assert [t for t in redone["timeline"]["tasks"] if "/block/" in t["task"]]
    assert _files(out / "3dtiles" / "pointcloud") == first


def test_tile_records_round_trip_exactly():
    child = upper.Tile(np.array([0.1, 0.2, 0.3]), np.array([1 / 3, 2.0, 3.0]), 0.0, "tiles/1_2/tileset.json",
                       transform=np.arange(16, dtype=float).reshape(4, 4) / 7)
    tile = upper.Tile(np.array([-1e-9, 0.0, 5.5]), np.array([7.0, 8.0, 9.0]), 12.5, None, [child], refine="ADD")
    back = upper._tile_from_record(json.loads(json.dumps(upper._tile_record(tile))))
    assert back.to_json() == tile.to_json()
    assert np.array_equal(back.children[0].transform, child.transform)


def _tile_results(stage, ctx) -> list[dict]:
    """Every tile's step result, built directly (no runner)."""
    from cim.tiles3d.pointcloud import build_tile

    cloud = synthetic_cloud(N)
    ix, iy = np.floor(cloud.x / TILE).astype(int), np.floor(cloud.y / TILE).astype(int)
    results = []
    for key in sorted(_tile_sizes()):
        a, b = (int(v) for v in key.split("_"))
        stats = build_tile(cloud[(ix == a) & (iy == b)], key, ctx.grid.tile_from_key(key).core_bounds, cloud.crs,
                           ctx.product_dir / "tiles" / key, stage.scratch_dir(ctx.out_dir),
                           stage.options.tiles_options())
        results.append({"tile": key, "stats": stats})
    return results


def _context(stage, out: Path):
    from cim.pipeline.stage import JobContext
    from cim.tiling import TileGrid

    return JobContext("reduce", out, synthetic_cloud(10).crs, TileGrid(TILE, 0.0), stage.folder)


def test_the_stage_finish_alone_does_every_block_then_the_merge(tmp_path, monkeypatch):
    """``finish`` outside the planner (summary, blocks one after the other, merge) writes what one task writes."""
    from cim.stages.tiles import PointTiles

    stage = PointTiles(PointTiles.Options(leaf_points=1000))
    assert len(stage.finish_blocks(sorted(_tile_sizes()))) >= 3
    written = {}
    for run in ("blocks", "one"):
        ctx = _context(stage, tmp_path / run)
        results = _tile_results(stage, ctx)
        with monkeypatch.context() as m:
            if run == "one":
                m.setattr(upper, "BLOCK_LEVELS", 10)
            products = stage.finish(results, ctx)
        assert products[0].properties["points"] == N
        written[run] = _files(ctx.product_dir)
    assert written["blocks"] == written["one"]


def test_a_merge_whose_blocks_do_not_match_rebuilds_the_whole_tree(tmp_path):
    """Planned blocks that do not match the tiles with points (e.g. tiles with buffer points only): the merge
    builds everything again, over what the blocks wrote, and the result is the one-task tileset."""
    from cim.stages.tiles import PointTiles

    stage = PointTiles(PointTiles.Options(leaf_points=1000))
    written = {}
    for run in ("partial", "one"):
        ctx = _context(stage, tmp_path / run)
        results = _tile_results(stage, ctx)
        records = {}
        if run == "partial":
            name, keys = sorted(stage.finish_blocks([r["tile"] for r in results]).items())[0]
            summary = stage.finish_summary(results, ctx)
            records[name] = stage.finish_block(name, [r for r in results if r["tile"] in keys], summary, ctx)
        stage.finish_merge(results, records, ctx)
        written[run] = _files(ctx.product_dir)
    assert written["partial"] == written["one"]
