"""``panoramas.publish``: georeference, anonymize and publish a panoramic drive, one task per image.

The stage's items are the drive's panoramas (:mod:`cim.pipeline.items`): each is redone when its pose, the contents
of its image or of the point clouds, the options or the chain's code change, or a product it wrote is missing or
changed. Its finish writes ``panoramas.json``, ``index.fgb`` and the ``stac-panoramas`` collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from cim.pipeline.items import Item, ItemStage
from cim.pipeline.stage import JobContext, Product, StageOptions

if TYPE_CHECKING:
    from cim.panoramas.process import ChainOptions
    from cim.runner.fingerprints import ContentHashes


class PublishOptions(StageOptions):
    poses: str = Field(description="pose file: Trimble MX7 panorama1.csv or cim's generic CSV")
    images: str = Field(description="folder of the equirectangular images (name + .jpg)")
    trajectory: str | None = Field(None, description="trajectory to interpolate missing poses")
    points: list[str] = Field([], description="LAS/LAZ in the job CRS for the depth maps")
    pose_crs: str | None = Field(None, description="CRS of projected x/y/z columns in the pose file")
    time_base: Literal["gps", "gps_adjusted", "gps_week", "unix", "utc"] = Field("gps", description="time column")
    gps_week: int | None = Field(None, description="GPS week for time_base gps_week")
    angles: Literal["hpr", "hpr_rad", "esri", "yaw_enu"] = Field("hpr", description="angle convention")
    north: Literal["true", "grid"] | None = Field(None, description="headings refer to true or grid north")
    detect_width: int = Field(2048, ge=256, description="resolution of the pinhole views of the band (equirect "
                                                        "width)")
    fine_width: int = Field(8000, ge=0, description="resolution of the face search in the ±6° horizon strip "
                                                    "(0 = off)")
    plates: bool = Field(True, description="search number plates")
    face_size: int | None = Field(None, gt=0, description="top cube face size of the tiles")
    tile_pixels: int = Field(512, gt=0, description="edge of the Marzipano tiles, pixels")
    tile_quality: int = Field(85, ge=1, le=100, description="JPEG quality of the tiles")
    image_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the anonymized image")
    north_up: bool = Field(True, description="yaw 0 of the tiles is grid north")
    depth_width: int = Field(2048, ge=16, description="width of the depth maps (equirectangular)")
    depth_max: float = Field(100.0, gt=0, description="farthest point of a depth map, metres")
    depth_fill: int = Field(2, ge=0, description="widest gap (pixels) the depth maps fill")
    folder: str = Field("", description="folder of the products inside the output folder")
    path_fields: ClassVar[tuple[str, ...]] = ("poses", "images", "trajectory", "points")

    def chain_options(self) -> ChainOptions:
        """The :class:`cim.panoramas.process.ChainOptions` these options stand for."""
        from cim.panoramas.privacy import AnonymizeOptions
        from cim.panoramas.process import ChainOptions

        *coarse, (lo, hi, _) = AnonymizeOptions().strips  # the last default strip is the full-resolution one
        strips = tuple(coarse) + (((lo, hi, self.fine_width),) if self.fine_width else ())
        anonymize = AnonymizeOptions(detect_width=self.detect_width, plates=self.plates, strips=strips)
        return ChainOptions(anonymize=anonymize, face_size=self.face_size, tile_size=self.tile_pixels,
                            tile_quality=self.tile_quality, image_quality=self.image_quality, north_up=self.north_up,
                            depth_width=self.depth_width, depth_max=self.depth_max, depth_fill=self.depth_fill)


class PublishStage(ItemStage):
    name = "panoramas.publish"
    summary = "Georeference, anonymize (faces, plates) and publish panoramas: tiles, depth maps, index, STAC"
    Options = PublishOptions
    produces = ("panoramas",)
    item_noun = "images"
    worker_imports = ("cim.panoramas.process",)

    def plan_items(self, ctx: JobContext, hashes: ContentHashes) -> list[Item]:
        from cim.fileutil import expand_patterns
        from cim.panoramas.process import georeference_drive

        o = self.options
        pose_options = {"crs": o.pose_crs, "time_base": o.time_base, "gps_week": o.gps_week, "angles": o.angles,
                        "north": o.north}
        panos = georeference_drive(o.poses, o.images, ctx.out_dir, ctx.crs.srs, trajectory=o.trajectory,
                                   pose_options=pose_options)
        points = [str(p.resolve()) for p in expand_patterns(o.points)]
        point_digests = hashes.digests(points)
        # an item depends on its pose (parsed: a pose-file edit re-runs only the panoramas it moves) and the
        # contents of its image and of the point clouds
        return [Item(p.name, (p.to_dict(), points), (p.to_dict(), digest, point_digests))
                for p, digest in zip(panos, hashes.digests([p.image for p in panos]))]

    def code_parts(self, hashes: ContentHashes) -> list[Any]:
        from cim.panoramas.process import chain_code_parts

        return chain_code_parts(hashes)

    def run_item(self, item: Item, ctx: JobContext) -> dict[str, Any]:
        from cim.panoramas.process import process_panorama

        pano, points = item.payload
        return process_panorama(pano, str(ctx.product_dir), str(ctx.out_dir), points,
                                self.options.chain_options().to_dict())

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        from cim.panoramas.georef import Panorama
        from cim.panoramas.process import write_drive_index

        panos = [Panorama.from_dict(r["panorama"]) for r in results]
        written = write_drive_index(panos, ctx.product_dir)
        xs, ys = [p.position[0] for p in panos], [p.position[1] for p in panos]
        bounds = [min(xs), min(ys), max(xs), max(ys)]
        kinds = {"panoramas.json": ("panoramas", "application/json", ("metadata",)),
                 "index.fgb": ("vector", "application/vnd.flatgeobuf", ("data",)),
                 "collection.json": ("stac", "application/json", ("metadata",))}
        products = []
        for rel in written:
            kind, media, roles = kinds[Path(rel).name]
            products.append(Product(ctx.relative(ctx.product_dir / rel), kind, media, roles,
                                    {"bounds": bounds, "panoramas": len(panos)}))
        return products
