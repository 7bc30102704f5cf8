"""A tile's load reads only the part folders that may hold its points, however many input files a job has."""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import cim
import cim.pipeline.shared
import cim.tiling
from cim.pipeline.execute import run_job
from cim.pipeline.job import load_job
from cim.pipeline.shared import shared_strings
from cim.tiling import TileGrid, load_tile, part_dtypes, parts_of_tiles

from tests.helpers import tiling_job

CELL, CELLS, SIZE, BUFFER = 20.0, 10, 50.0, 2.0  # 100 files of 20 m x 20 m over 200 m; tiles of 50 m: 4 x 4
X0, Y0 = 500000.0, 5480000.0  # multiples of the tile size


def _inputs(folder: Path) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """One small LAS file per 20 m cell, in row order; the eastern half's files carry RGB, the western half's do
    not. Returns each file's x, y."""
    rng = np.random.default_rng(7)
    crs = cim.crs.resolve("EPSG:25832+7837")
    files = {}
    for row in range(CELLS):
        for col in range(CELLS):
            n = 300
            x, y = X0 + (col + rng.uniform(0, 1, n)) * CELL, Y0 + (row + rng.uniform(0, 1, n)) * CELL
            data = {"x": x, "y": y, "z": rng.uniform(230, 260, n), "intensity": rng.integers(0, 4000, n).astype("u2")}
            if col >= CELLS // 2:
                data.update({c: rng.integers(0, 65535, n).astype("u2") for c in ("red", "green", "blue")})
            path = folder / f"r{row:02d}_c{col:02d}.las"
            cim.write(path, cim.PointCloud(data, crs))
            files[path] = (x, y)
    return files


def _neighbourhood_files(files: dict[Path, tuple[np.ndarray, np.ndarray]], key: str) -> set[str]:
    """The input files (stems) with a point in the 3 x 3 tiles around tile ``key``: those whose parts may hold its
    core or buffer points (computed from the generated points, not from the partition)."""
    ix, iy = (int(v) for v in key.split("_"))
    minx, miny = (ix - 1) * SIZE, (iy - 1) * SIZE
    return {path.stem for path, (x, y) in files.items()
            if np.any((x >= minx) & (x < minx + 3 * SIZE) & (y >= miny) & (y < miny + 3 * SIZE))}


def test_a_tile_load_reads_only_the_parts_of_its_neighbourhood_and_keeps_every_dimension(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _inputs(tmp_path)
    job = load_job(tiling_job(tmp_path / "job.toml", tmp_path / "out", tmp_path / "*.las", size=SIZE, buffer=BUFFER,
                              write="keep_buffer = true"))
    touched: dict[str, list[str]] = defaultdict(list)  # tile key -> the part folders its load opened
    load_buffered = cim.tiling._load_buffered

    def counting(folder: Path, tile: cim.tiling.Tile) -> dict[str, np.ndarray]:
        touched[tile.key].append(Path(folder).name.split("-", 1)[1])
        return load_buffered(folder, tile)

    monkeypatch.setattr(cim.tiling, "_load_buffered", counting)
    run = run_job(job, scheduler="threads", workers=1)
    assert run.report.ok and run.tiles == 16 and run.points == CELLS * CELLS * 300
    for key in touched:
        assert set(touched[key]) == _neighbourhood_files(files, key), key
        assert len(touched[key]) == len(set(touched[key]))
    assert max(len(v) for v in touched.values()) <= 64 < len(files)  # 3 x 3 tiles span 8 x 8 of the 100 files
    # every tile has RGB, also those whose neighbourhood has only files without it (zeros there)
    west, east = (cim.read(tmp_path / "out" / "las" / f"{X0 // SIZE + k:.0f}_{Y0 // SIZE:.0f}.laz") for k in (0, 3))
    assert {"red", "green", "blue"} <= set(west.names) == set(east.names)
    assert not west.red.any() and east.red.any()


def test_a_tile_from_its_neighbourhood_parts_equals_the_tile_from_all_parts(tmp_path: Path) -> None:
    files = _inputs(tmp_path)
    crs = cim.crs.resolve("EPSG:25832+7837")
    grid = TileGrid(SIZE, BUFFER)
    counts = {}
    for number, path in enumerate(files):
        source = cim.io.las.open_source(path, crs)
        counts[str(tmp_path / "parts" / path.stem)] = cim.tiling.partition_file(
            source, grid, crs, tmp_path / "parts" / path.stem, chunk_size=128)
    tiles = [grid.tile_from_key(k) for k in sorted({k for c in counts.values() for k in c})]
    parts = parts_of_tiles(counts, tiles)
    dtypes = part_dtypes(counts)
    with pytest.warns(cim.errors.CimWarning, match="has no red"):
        for tile in tiles:
            whole = load_tile(list(counts), tile, crs)
            some = load_tile(parts[tile.key], tile, crs, dtypes)
            assert len(parts[tile.key]) < len(counts) and len(some) > 0
            assert some.names == whole.names
            for name in whole.names:
                np.testing.assert_array_equal(some[name], whole[name], err_msg=f"{tile.key} {name}")


def test_the_inputs_every_task_names_travel_as_a_reference_to_one_file(tmp_path: Path) -> None:
    names = [f"/data/city/block_{i:04d}/aerial_{i:04d}.laz" for i in range(784)]
    shared = shared_strings(tmp_path / "inputs.json", names)
    shipped = pickle.dumps(shared)
    assert shared == tuple(names) and pickle.loads(shipped) == tuple(names)
    assert len(shipped) < 300 and len(pickle.dumps(tuple(names))) > 30_000  # a path and digest, not the list
    (tmp_path / "inputs.json").write_text(json.dumps(names[:-1]))  # changed under a running job: refused
    cim.pipeline.shared._load.cache_clear()  # as in a fresh worker process
    with pytest.raises(cim.errors.InputError, match="changed while the job ran"):
        pickle.loads(shipped)
