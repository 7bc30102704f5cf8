"""``write.citygml``: the building models of a buildings stage as one CityGML 2.0 file in the AdV LoD2 profile."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cim.pipeline.stage import JobContext, Product, StageOptions
from cim.stages.buildings import _MergedStage

CITYGML_MEDIA = "application/gml+xml"


class WriteCityGmlOptions(StageOptions):
    folder: str = Field("", description="output folder inside the job's output folder")
    name: str = Field("buildings", description="file name stem (<name>.gml)")
    decimals: int = Field(3, ge=0, le=9, description="decimals of the coordinates (3: millimetres)")


class WriteCityGml(_MergedStage):
    name = "write.citygml"
    summary = "Merge the building models into CityGML 2.0 (AdV LoD2 profile: roofType, measuredHeight, lod2Solid)"
    Options = WriteCityGmlOptions
    produces = ("citygml",)
    worker_imports = ("cim.buildings.run", "cim.citygml.writer")

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        from cim.citygml.writer import envelope, write_citygml

        o = self.options
        models = self.models(ctx)
        if not models:
            return []
        bounds = envelope(models)
        path = write_citygml(ctx.product_dir / f"{o.name}.gml", models, ctx.crs, bounds=bounds,
                             name=f"{ctx.name}: buildings", creation_date=ctx.acquired[:10] if ctx.acquired else None,
                             decimals=o.decimals)
        props: dict[str, Any] = {"buildings": len(models)}
        if bounds is not None:
            props["bounds"] = [round(float(v), 3) for v in (*bounds[0], *bounds[1])]
        return [Product(ctx.relative(path), "citygml", CITYGML_MEDIA, properties=props)]
