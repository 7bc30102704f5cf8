"""``panoramas.colorize``: colour each tile's points from the anonymized panoramas of a ``cim panoramas`` run."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from cim.pipeline.stage import Stage, StageOptions, TileContext, TileResult, register
from cim.points import PointCloud


class ColorizeStageOptions(StageOptions):
    panoramas: str = Field(description="panoramas.json written by `cim panoramas` (anonymized images)")
    max_range: float = Field(30.0, gt=0, description="farthest panorama that may colour a point, metres")
    buffer_width: int = Field(2048, ge=256, description="z-buffer resolution (equirectangular width)")
    tolerance_abs: float = Field(0.10, ge=0, description="metres a point may lie behind the nearest surface")
    tolerance_rel: float = Field(0.02, ge=0, description="plus this fraction of its distance")
    path_fields: ClassVar[tuple[str, ...]] = ("panoramas",)


@register
class ColorizeStage(Stage):
    name = "panoramas.colorize"
    summary = "Colour points (red/green/blue) from the nearest anonymized panorama that sees them (z-buffer test)"
    Options = ColorizeStageOptions
    modifies_points = True

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        from cim.panoramas.colorize import ColorizeOptions, colorize_points
        from cim.panoramas.georef import load_panoramas
        from cim.panoramas.process import ImageCache, apply_colours

        o = self.options
        panos = load_panoramas(o.panoramas)
        opts = ColorizeOptions(max_range=o.max_range, buffer_width=o.buffer_width, tolerance_abs=o.tolerance_abs,
                               tolerance_rel=o.tolerance_rel)
        # the tile's buffer points take part in the z-buffer (occluders across the tile edge) and get colours too
        rgb, source, _ = colorize_points(cloud.xyz, panos, ImageCache(ctx.out_dir), opts)
        apply_colours(cloud, rgb, source)
        core = cloud["core"] if cloud.has("core") else np.ones(len(cloud), bool)
        coloured = int((source[core] >= 0).sum())
        if len(cloud) and coloured == 0:
            ctx.warn("no panorama sees this tile's points")
        return TileResult(cloud=cloud, stats={"points": int(core.sum()), "coloured": coloured})
