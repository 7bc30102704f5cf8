"""Task sizing: advice for a job whose tiles are too few to keep its workers busy (issue 12).

The chains of a job run one task per tile, so a job with fewer tiles than workers leaves workers idle. The
advice names the largest tile size that gives at least as many tiles as workers, among the whole fractions of the
current size (so the new grid nests in the old) that one can write exactly, and how many tiles it gives.
"""

from __future__ import annotations

import math

from cim.tiling import Tile, TileGrid

#: The finest split tried: a tile cut into at most this many squares per side.
MAX_SPLIT = 16

Box = tuple[float, float, float, float]


def tile_advice(grid: TileGrid, tiles: list[Tile], extent: Box, area: Box | None, workers: int) -> str | None:
    """One line of advice when ``tiles`` (those holding points) are fewer than ``workers``: a smaller size and the
    number of tiles it gives (the finer tiles inside a tile holding points that meet the data's ``extent`` and
    the job's ``area``); None when the tiles are enough or no size above the buffer gives more."""
    if len(tiles) >= workers:
        return None
    occupied = {(t.ix, t.iy) for t in tiles}
    if area is not None:
        extent = (max(extent[0], area[0]), max(extent[1], area[1]), min(extent[2], area[2]), min(extent[3], area[3]))
    xs, ys = [t.ix for t in tiles], [t.iy for t in tiles]
    extent = (max(extent[0], min(xs) * grid.size), max(extent[1], min(ys) * grid.size),
              min(extent[2], (max(xs) + 1) * grid.size), min(extent[3], (max(ys) + 1) * grid.size))
    best: tuple[float, int] | None = None
    for split in range(2, MAX_SPLIT + 1):
        finer = TileGrid(grid.size / split, 0.0)
        if finer.size <= grid.buffer:
            break
        if float(f"{finer.size:g}") != finer.size:  # a size one can write exactly (250 / 3 is not)
            continue
        count = sum((math.floor(t.ix / split), math.floor(t.iy / split)) in occupied
                    for t in finer.tiles_covering(extent))
        if count > len(tiles):
            best = (finer.size, count)
        if count >= workers:
            break
    if best is None:
        return None
    return (f"{len(tiles)} tile{'s' if len(tiles) != 1 else ''} for {workers} workers leave workers idle: tile "
            f"size {best[0]:g} (the tile stage's 'size') would give {best[1]} tiles")
