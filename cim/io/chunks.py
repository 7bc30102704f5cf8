"""Chunk planning: the point ranges of one input file that separate partition tasks read.

A large file is partitioned by several tasks at once, each streaming one range of its points (LAS by offset,
LAZ and COPC through the chunk table, binary PLY memory-mapped; see ``PointSource.seekable``). Ranges are whole
multiples of the job's chunk size, so every range yields exactly the chunks a single pass over the file yields,
and the tiles assembled from the ranges' parts equal those of a whole-file partition point for point.
"""

from __future__ import annotations

from cim.io.readers import PointSource


def task_ranges(source: PointSource, chunk_size: int, task_points: int, queried: bool = False) -> list[range] | None:
    """The point ranges of ``source`` for separate partition tasks, in file order: ``task_points`` each, rounded
    up to whole chunks of ``chunk_size``; None when one task reads the file whole: it is not seekable, it holds
    no more than one range, or it is a COPC file ``queried`` by the job's area (one query reads only the octree
    nodes the area needs)."""
    size = -(-max(task_points, chunk_size) // chunk_size) * chunk_size
    count = source.point_count
    seekable = getattr(source, "seekable", False)  # a plug-in reader that does not say so is read whole
    if not seekable or count <= size or (queried and getattr(source, "is_copc", False)):
        return None
    return [range(start, min(start + size, count)) for start in range(0, count, size)]
