"""``panoramas.colorize``: colour each tile's points from the anonymized panoramas of a ``cim panoramas`` run or of
the job's ``panoramas.publish`` stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import Field

from cim.errors import ConfigError
from cim.pipeline.stage import Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud

if TYPE_CHECKING:
    from cim.panoramas.colorize import ColorizeOptions


class ColorizeStageOptions(StageOptions):
    panoramas: str | None = Field(None, description="panoramas.json written by `cim panoramas` (anonymized images); "
                                                   "default: the one of the job's panoramas.publish stage")
    max_range: float = Field(30.0, gt=0, description="farthest panorama that may colour a point, metres")
    buffer_width: int = Field(2048, ge=256, description="finest z-buffer (equirectangular width)")
    levels: int = Field(4, ge=1, le=8, description="z-buffer pyramid levels (each halves the width)")
    gap_abs: float = Field(0.2, ge=0, description="a jump in distance > gap_abs + gap_rel * d in a pixel occludes")
    gap_rel: float = Field(0.02, ge=0, description="see gap_abs")
    path_fields: ClassVar[tuple[str, ...]] = ("panoramas",)

    def colorize_options(self) -> ColorizeOptions:
        """The :class:`cim.panoramas.colorize.ColorizeOptions` these stage options stand for."""
        from cim.panoramas.colorize import ColorizeOptions

        return ColorizeOptions(**self.model_dump(exclude={"panoramas"}))


class ColorizeStage(Stage):
    name = "panoramas.colorize"
    summary = "Colour points (red/green/blue) from the nearest anonymized panorama that sees them (z-buffer test)"
    Options = ColorizeStageOptions
    modifies_points = True
    reuses = ("panoramas",)
    worker_imports = ("cim.panoramas.colorize", "cim.panoramas.process")

    def check(self) -> list[tuple[str, str]]:
        """Refuse the job when the stage has no panoramas to read (no option, no ``panoramas.publish`` before it)."""
        if self.options.panoramas or "panoramas" in self.inputs:
            return []
        return [("panoramas", f"{self.name} needs a panoramas.json: name one or put a panoramas.publish stage "
                              "before it")]

    def index(self, ctx: TileContext) -> Path:
        """The panoramas.json the stage reads: its option, else the one the job's ``panoramas.publish`` writes."""
        if problems := self.check():  # a stage made without a job (a job checks it when validated)
            raise ConfigError(*problems[0])
        folder = self.input_dir("panoramas", ctx)
        return folder / "panoramas.json" if folder and not self.options.panoramas else Path(str(self.options.panoramas))

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        from cim.panoramas.colorize import colorize_points
        from cim.panoramas.georef import load_panoramas
        from cim.panoramas.process import ImageCache, apply_colours

        o = self.options
        panos = load_panoramas(self.index(ctx))
        # the tile's buffer points take part in the z-buffer (occluders across the tile edge) and get colours too
        rgb, source, _ = colorize_points(cloud.xyz, panos, ImageCache(ctx.out_dir), o.colorize_options())
        apply_colours(cloud, rgb, source)
        core = cloud["core"] if cloud.has("core") else np.ones(len(cloud), bool)
        coloured = int((source[core] >= 0).sum())
        if len(cloud) and coloured == 0:
            ctx.warn("no panorama sees this tile's points")
        return TileResult(cloud=cloud, stats={"points": int(core.sum()), "coloured": coloured})
