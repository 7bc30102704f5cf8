"""Withheld points (the LAS ``withheld`` flag) are left out of processing: a stage sees the tile without them,
and the points it changes are joined back with the withheld ones, which keep every value (class and flag
included); the task's stats count the tile's own withheld points as ``withheld``. Stages that declare
``sees_withheld = True`` (the LAS writer) get the whole tile. A job that sets ``withheld = "keep"`` on its readers
processes them like any other point.
"""

from __future__ import annotations

import numpy as np

from cim.pipeline.stage import Stage, TileContext, TileResult
from cim.points import PointCloud


def run_stage(stage: Stage, cloud: PointCloud, ctx: TileContext) -> TileResult:
    """``stage.run(cloud, ctx)``, without the withheld points unless the job keeps them or the stage sees them."""
    if not ctx.skip_withheld or stage.sees_withheld or not cloud.has("withheld"):
        return stage.run(cloud, ctx)
    held = np.asarray(cloud["withheld"], dtype=bool)
    if not held.any():
        return stage.run(cloud, ctx)
    result = stage.run(cloud[~held], ctx)
    if result.cloud is not None:
        result.cloud = rejoin(result.cloud, cloud[held])
    core = np.asarray(cloud["core"], dtype=bool) if cloud.has("core") else np.ones(len(cloud), dtype=bool)
    result.stats.setdefault("withheld", int(np.count_nonzero(held & core)))  # left out, among the tile's own
    return result


def rejoin(processed: PointCloud, held: PointCloud) -> PointCloud:
    """``processed`` followed by ``held``, with the dimensions of ``processed`` (zeros where ``held`` lacks one)."""
    data = {name: held[name] if held.has(name) else np.zeros(len(held), processed[name].dtype)
            for name in processed.names}
    return PointCloud.concat([processed, PointCloud(data, processed.crs)])
