"""The tiles of a job planned before its partition, from the bounds its input files' headers state (issue 12).

Planning from the headers lets every tile's chain wait only for the partition tasks whose files may hold its points
(the files whose header box meets the tile's 3 x 3 neighbourhood, see :func:`cim.tiling.parts_of_tiles`) instead of
for the whole partition. A partition task checks its file's points against the header box it was planned with
(:func:`check_inside`): a lying header fails that file with one line instead of a tile missing points. Tiles whose
core turns out to hold no point are found by their chains (from the partition's counts) and produce nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cim.errors import InputError
from cim.points import Bounds
from cim.tiling import Tile, TileGrid, parts_of_tiles

Box = tuple[float, float, float, float]
#: Tile index range (first column, first row, last column, last row) whose cores a box meets.
Span = tuple[int, int, int, int]

@dataclass(frozen=True)
class TilePlan:
    """``tiles``: every tile whose core a file's box meets (row by row); ``estimates``: per tile key the core points
    expected there (a file's header point count spread over its box by area); ``parts``: per tile key the part
    folders that may hold its points, in input order; ``spans``: per part folder the tiles it may hold."""

    tiles: list[Tile]
    estimates: dict[str, float]
    parts: dict[str, list[str]]
    spans: dict[str, Span]


def span(grid: TileGrid, bounds: Bounds, area: Box | None) -> Span | None:
    """The tiles whose cores the header ``bounds`` meet inside ``area`` (None: none). The bounds are taken as
    stated, not grown: files delivered on a grid of whole tiles start on a tile edge, and a margin would give each
    a row and a column of empty tiles more."""
    minx, miny, maxx, maxy = bounds.xy
    if area is not None:  # its max edges excluded (see cim.tiling.partition_file)
        minx, miny = max(minx, area[0]), max(miny, area[1])
        maxx, maxy = min(maxx, math.nextafter(area[2], -math.inf)), min(maxy, math.nextafter(area[3], -math.inf))
        if minx > maxx or miny > maxy:
            return None
    return (math.floor(minx / grid.size), math.floor(miny / grid.size),
            math.floor(maxx / grid.size), math.floor(maxy / grid.size))


def plan_tiles(grid: TileGrid, folders: dict[str, tuple[Bounds, int]], area: Box | None) -> TilePlan:
    """The :class:`TilePlan` of part folders (in input order) with the header bounds and point count of what each
    reads (a range of a file: the file's bounds and the range's count)."""
    spans: dict[str, Span] = {}
    estimates: dict[str, float] = {}
    for folder, (bounds, count) in folders.items():
        covered = span(grid, bounds, area)
        if covered is None:
            continue
        spans[folder] = covered
        ix0, iy0, ix1, iy1 = covered
        width, height = bounds.maxx - bounds.minx, bounds.maxy - bounds.miny
        for iy in range(iy0, iy1 + 1):
            for ix in range(ix0, ix1 + 1):
                minx, miny, maxx, maxy = grid.tile(ix, iy).core_bounds
                share = (_overlap(bounds.minx, bounds.maxx, minx, maxx, width) *
                         _overlap(bounds.miny, bounds.maxy, miny, maxy, height))
                estimates[f"{ix}_{iy}"] = estimates.get(f"{ix}_{iy}", 0.0) + count * share
    tiles = sorted((grid.tile_from_key(k) for k in estimates), key=lambda t: (t.iy, t.ix))
    holding = {folder: {f"{ix}_{iy}": 1 for iy in range(s[1], s[3] + 1) for ix in range(s[0], s[2] + 1)}
               for folder, s in spans.items()}
    return TilePlan(tiles, estimates, parts_of_tiles(holding, tiles), spans)


def _overlap(low: float, high: float, start: float, end: float, length: float) -> float:
    """The share of [low, high] inside [start, end) (of a point-like extent: 1 when it lies there)."""
    if length <= 0:
        return 1.0 if start <= low < end else 0.0
    return max(0.0, min(high, end) - max(low, start)) / length


def check_inside(path: str, covered: Span, counts: dict[str, int]) -> None:
    """Raise InputError naming ``path`` when its partition ``counts`` hold points of tiles outside the ``covered``
    span its header bounds gave (the chains of those tiles were planned without this file)."""
    ix0, iy0, ix1, iy1 = covered
    outside = [k for k, n in counts.items() if n and not (ix0 <= int(k.split("_")[0]) <= ix1
                                                          and iy0 <= int(k.split("_")[1]) <= iy1)]
    if outside:
        points = sum(counts[k] for k in outside)
        raise InputError(path, f"{points} points lie outside the bounds its header states; fix the header "
                               "(e.g. lasinfo -repair_bb) and run again")
