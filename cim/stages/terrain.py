"""Terrain stages: ``filter.outliers``, ``classify.ground``, ``classify.objects`` and the rasters ``raster.dtm``,
``raster.dsm``, ``raster.ndsm``, ``raster.density``.

Every stage reads the tile's buffer points as context, so its results for the core do not depend on the tile cut.
The raster stages write the tile's core square on the one global grid of their resolution as a COG
(``<folder>/<tile>.tif``) and, in ``finish``, a VRT mosaic ``<folder>.vrt`` beside the folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from cim.crs import linear_unit_factor
from cim.pipeline.stage import JobContext, Product, Stage, StageOptions, TileContext, TileResult
from cim.points import PointCloud
from cim.terrain.grid import GridSpec
from cim.terrain.params import NODATA, NOISE_CLASSES, ObjectParams, SmrfParams

COG_MEDIA = "image/tiff; application=geotiff; profile=cloud-optimized"
VRT_MEDIA = "application/x-gdal-vrt"


def _classes(cloud: PointCloud) -> np.ndarray:
    if cloud.has("classification"):
        return np.asarray(cloud["classification"]).copy()
    return np.zeros(len(cloud), dtype=np.uint8)


def _noise(cloud: PointCloud) -> np.ndarray:
    return np.isin(_classes(cloud), NOISE_CLASSES)


def _core(cloud: PointCloud) -> np.ndarray:
    return np.asarray(cloud["core"], dtype=bool) if cloud.has("core") else np.ones(len(cloud), dtype=bool)


def _unit(ctx: TileContext) -> float:
    return linear_unit_factor(ctx.crs) if ctx.crs is not None else 1.0


class PointStage(Stage):
    """A stage that changes the tile's points in place (buffer points included, as context) and reports counts over
    the core points. Subclasses implement :meth:`update`; ``run`` adds ``points`` (the core count) to its stats.
    Point stages of other packages (e.g. ``panoramas.colorize``) can subclass it the same way."""

    modifies_points = True

    def update(self, cloud: PointCloud, core: np.ndarray, ctx: TileContext) -> dict[str, Any]:
        """Change ``cloud`` in place; return stats over the ``core`` points."""
        raise NotImplementedError

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        core = _core(cloud)
        stats = self.update(cloud, core, ctx)
        return TileResult(cloud=cloud, stats={"points": int(core.sum()), **stats})


# -- filter.outliers ---------------------------------------------------------------------------------------------
class OutlierOptions(StageOptions):
    low_noise: bool = Field(True, description="mark points far below their isolated surroundings as class 7")
    low_threshold: float = Field(1.5, gt=0, description="m below the local low reference for low noise")
    low_radius: float = Field(5.0, gt=0, description="m; a low point with few neighbours within it is noise")
    low_share: float = Field(0.1, ge=0, le=1, description="few = under 2 and under this share of the points in "
                             "the vertical cylinder of low_radius")
    isolated: bool = Field(True, description="mark isolated points (7 below / 18 above their surroundings)")
    isolated_radius: float = Field(5.0, gt=0, description="m (3D) search radius for isolated points")
    isolated_min_neighbors: int = Field(1, ge=1, description="fewer other points within the radius = isolated")
    statistical: bool = Field(False, description="also PDAL-style statistical outliers (per-tile statistics)")
    statistical_k: int = Field(8, ge=2)
    statistical_multiplier: float = Field(3.0, gt=0)


class OutlierStage(PointStage):
    name = "filter.outliers"
    summary = "Mark low noise and isolated points as ASPRS 7 (low) / 18 (high noise); nothing is removed"
    Options = OutlierOptions
    worker_imports = ("cim.terrain.outliers",)

    def update(self, cloud: PointCloud, core: np.ndarray, ctx: TileContext) -> dict[str, Any]:
        from cim.terrain import outliers as noise

        o = self.options
        u = _unit(ctx)
        cls = _classes(cloud)
        x, y, z = np.asarray(cloud.x), np.asarray(cloud.y), np.asarray(cloud.z)
        low = np.zeros(len(cloud), dtype=bool)
        if o.low_noise:
            low = noise.low_noise(x, y, z, threshold=o.low_threshold, radius=o.low_radius, min_share=o.low_share,
                                  unit=u)
        odd = np.zeros(len(cloud), dtype=bool)
        xyz = cloud.xyz
        if o.isolated:
            odd |= noise.isolated_points(xyz, radius=o.isolated_radius / u, min_neighbors=o.isolated_min_neighbors)
        if o.statistical:
            odd |= noise.statistical_outliers(xyz, k=o.statistical_k, multiplier=o.statistical_multiplier)
        odd &= ~low
        high = odd & _above_local_median(x, y, z, 10.0 / u)
        cls[low | (odd & ~high)] = noise.LOW_NOISE
        cls[high] = noise.HIGH_NOISE
        cloud.set("classification", cls)
        return {"low_noise": int((low & core).sum()), "isolated_low": int((odd & ~high & core).sum()),
                "high_noise": int((high & core).sum())}


def _above_local_median(x: np.ndarray, y: np.ndarray, z: np.ndarray, cell: float) -> np.ndarray:
    """Whether each point lies above the median height of its ``cell`` grid cell."""
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    out = np.zeros(len(x), dtype=bool)
    if not ok.any():
        return out
    grid = GridSpec.from_points(x[ok], y[ok], cell)
    idx = grid.flat_index(x[ok], y[ok])
    order = np.lexsort((z[ok], idx))
    counts = np.bincount(idx, minlength=grid.width * grid.height)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = z[ok][order][starts[idx] + counts[idx] // 2]
    out[ok] = z[ok] > med
    return out


# -- classify.ground ----------------------------------------------------------------------------------------------
class GroundOptions(StageOptions):
    backend: Literal["smrf", "csf"] = Field("smrf", description="SMRF (default) or the cloth-simulation-filter")
    mode: Literal["always", "auto"] = Field(
        "always", description="'auto' keeps existing ground labels when the tile (with buffer) has class 2 points")
    cell: float = Field(SmrfParams.cell, gt=0, description="SMRF grid cell (m)")
    slope: float = Field(SmrfParams.slope, ge=0, description="SMRF slope threshold (rise/run)")
    window: float = Field(SmrfParams.window, gt=0, description="SMRF largest window radius (m)")
    threshold: float = Field(SmrfParams.threshold, ge=0, description="SMRF elevation threshold (m)")
    scalar: float = Field(SmrfParams.scalar, ge=0, description="SMRF elevation scaling factor (m per unit slope)")
    refine: int = Field(SmrfParams.refine, ge=0, le=10, description="DEM rebuilds from the accepted ground points")
    slope_window: float = Field(
        SmrfParams.slope_window, ge=0, description="square (m) over which the DEM slope of the tolerance is averaged")
    max_edge: float = Field(
        SmrfParams.max_edge, gt=0, description="longest TIN edge (m) filling the minimum surface; nearest beyond")


class GroundStage(PointStage):
    name = "classify.ground"
    summary = "Ground (2) / non-ground (1) by a vectorised SMRF (or CSF); noise classes are kept"
    Options = GroundOptions
    worker_imports = ("cim.terrain.ground",)

    def update(self, cloud: PointCloud, core: np.ndarray, ctx: TileContext) -> dict[str, Any]:
        from cim.terrain.ground import classify_ground

        o = self.options
        cls = _classes(cloud)
        if o.mode == "auto" and (cls == 2).any():
            return {"ground": int(((cls == 2) & core).sum()), "kept_labels": True}
        if o.backend == "smrf":
            params = o.model_dump(include=set(SmrfParams.__dataclass_fields__))
        else:
            params = {}
        ground = classify_ground(cloud, backend=o.backend, **params)
        noisy = np.isin(cls, NOISE_CLASSES)
        was_ground = cls == 2
        cls[ground] = 2
        cls[was_ground & ~ground & ~noisy] = 1
        cls[(cls == 0) & ~noisy] = 1
        cloud.set("classification", cls)
        n_ground = int((ground & core).sum())
        if n_ground == 0 and core.any():
            ctx.warn("no ground points found in this tile")
        return {"ground": n_ground}


# -- classify.objects ---------------------------------------------------------------------------------------------
class ObjectOptions(StageOptions):
    min_height: float = Field(ObjectParams.min_height, gt=0, description="m above ground for building points")
    min_area: float = Field(ObjectParams.min_area, gt=0, description="m2, smallest building part")
    scatter: float = Field(ObjectParams.scatter, gt=0, le=1, description="l3/l1 at most this for a planar point")
    k: int = Field(ObjectParams.k, ge=4, description="neighbours for the local shape")


class ObjectStage(PointStage):
    name = "classify.objects"
    summary = "Buildings (6), vegetation (3/4/5) and other (1) from height above ground and local shape"
    Options = ObjectOptions
    worker_imports = ("cim.terrain.objects",)

    def update(self, cloud: PointCloud, core: np.ndarray, ctx: TileContext) -> dict[str, Any]:
        from cim.terrain.objects import classify_objects

        o = self.options
        u = _unit(ctx)
        if not (_classes(cloud) == 2).any():
            ctx.warn("no ground points (class 2) in this tile: run classify.ground first; objects not classified")
            return {"buildings": 0}
        p = ObjectParams(k=o.k, min_height=o.min_height / u, scatter=o.scatter, cell=1.0 / u,
                         min_area=o.min_area / u**2, low_veg=0.5 / u, medium_veg=2.0 / u, dtm_cell=1.0 / u)
        new = classify_objects(cloud, params=p)
        cloud.set("classification", new)
        counts = np.bincount(new[core], minlength=19)
        return {"buildings": int(counts[6]), "vegetation": int(counts[3] + counts[4] + counts[5])}


# -- rasters --------------------------------------------------------------------------------------------------------
class RasterOptions(StageOptions):
    resolution: float = Field(0.5, gt=0, description="cell size in CRS units; cells align to multiples of it")
    folder: str | None = Field(None, description="output folder (default: the raster kind, e.g. 'dtm')")
    path_fields: ClassVar[tuple[str, ...]] = ()


class DtmOptions(RasterOptions):
    max_edge: float | None = Field(None, gt=0, description="leave cells under longer TIN edges empty (CRS units)")


class DsmOptions(RasterOptions):
    fill_max_edge: float = Field(2.0, ge=0, description="fill DSM holes under TIN edges up to this (0 = no fill)")


#: COG metadata key holding the digest of the points a raster was made from (see ``_RasterStage.points_digest``)
POINTS_TAG = "CIM_POINTS_DIGEST"


def _digest(cloud: PointCloud, mask: np.ndarray) -> str:
    """Digest of the coordinates and a per-point mask: the points a raster is made from (its options not included)."""
    h = hashlib.blake2b(digest_size=16)
    for a in (cloud.x, cloud.y, cloud.z):
        h.update(np.ascontiguousarray(a, dtype=np.float64))  # hashed through the buffer, no bytes copy
    h.update(np.packbits(np.asarray(mask, dtype=bool)).tobytes())
    return h.hexdigest()


class _RasterStage(Stage):
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    units: ClassVar[str | None] = "metre"
    nodata: ClassVar[float | None] = NODATA
    Options = RasterOptions
    worker_imports = ("cim.terrain.dtm", "cim.terrain.raster")

    @property
    def folder(self) -> str:  # type: ignore[override]
        return self.options.folder or self.kind

    def grid_for(self, ctx: TileContext) -> GridSpec:
        return GridSpec.from_bounds(*ctx.tile.core_bounds, resolution=self.options.resolution)

    def compute(self, cloud: PointCloud, grid: GridSpec, ctx: TileContext) -> np.ndarray:
        raise NotImplementedError

    def points_digest(self, cloud: PointCloud) -> str | None:
        """Digest of what the raster depends on (stored in the COG so later stages can reuse it), or None."""
        return None

    def run(self, cloud: PointCloud, ctx: TileContext) -> TileResult:
        from cim.terrain.raster import write_cog

        grid = self.grid_for(ctx)
        values = self.compute(cloud, grid, ctx)
        path = ctx.product_dir / f"{ctx.tile.key}.tif"
        digest = self.points_digest(cloud)
        write_cog(path, values, grid, ctx.crs, nodata=self.nodata, description=self.description, units=self.units,
                  tags={POINTS_TAG: digest} if digest else None)
        valid = np.isfinite(values)
        stats: dict[str, Any] = {"cells": int(values.size), "valid_cells": int(valid.sum()),
                                 "grid": [grid.xmin, grid.ymax, grid.width, grid.height, grid.resolution]}
        if valid.any():
            stats.update(min=float(np.nanmin(values)), max=float(np.nanmax(values)))
        product = Product(ctx.relative(path), "raster", COG_MEDIA,
                          properties={"raster:kind": self.kind, "gsd": self.options.resolution})
        return TileResult(products=[product], stats=stats)

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        from cim.terrain.raster import write_vrt

        sources = []
        for r in results:
            g = (r.get("stats") or {}).get("grid")
            if not g:
                continue
            path = ctx.product_dir / f"{r['tile']}.tif"
            if path.exists():
                sources.append((path, GridSpec(g[0], g[1], int(g[2]), int(g[3]), g[4])))
        if not sources:
            return []
        vrt = ctx.out_dir / f"{self.folder}.vrt"
        write_vrt(vrt, sources, ctx.crs, nodata=self.nodata, description=self.description)
        return [Product(ctx.relative(vrt), "raster", VRT_MEDIA, roles=("data", "mosaic"),
                        properties={"raster:kind": self.kind, "gsd": self.options.resolution})]


def _ground_mask(cloud: PointCloud, ctx: TileContext) -> np.ndarray:
    cls = _classes(cloud)
    ground = cls == 2
    if not ground.any() and len(cloud):
        ctx.warn("no ground points (class 2) in this tile and its buffer: the DTM is empty (all nodata)")
    return ground


class DtmStage(_RasterStage):
    name = "raster.dtm"
    summary = "Digital terrain model COG (mean of ground points per cell, TIN-filled gaps) + VRT mosaic"
    kind = "dtm"
    produces = ("dtm",)
    description = "DTM: bare-earth height"
    Options = DtmOptions

    def compute(self, cloud: PointCloud, grid: GridSpec, ctx: TileContext) -> np.ndarray:
        from cim.terrain.dtm import dtm_grid

        return dtm_grid(cloud, grid, ground=_ground_mask(cloud, ctx), max_edge=self.options.max_edge)

    def points_digest(self, cloud: PointCloud) -> str:
        return _digest(cloud, _classes(cloud) == 2)


class DsmStage(_RasterStage):
    name = "raster.dsm"
    summary = "Digital surface model COG (highest point per cell, small holes TIN-filled) + VRT mosaic"
    kind = "dsm"
    produces = ("dsm",)
    description = "DSM: highest surface height"
    Options = DsmOptions

    def compute(self, cloud: PointCloud, grid: GridSpec, ctx: TileContext) -> np.ndarray:
        from cim.terrain.dtm import dsm_grid

        return dsm_grid(cloud, grid, fill_max_edge=self.options.fill_max_edge or None)

    def points_digest(self, cloud: PointCloud) -> str:
        return _digest(cloud, ~_noise(cloud))


class NdsmOptions(DsmOptions):
    pass


class NdsmStage(_RasterStage):
    name = "raster.ndsm"
    summary = "Normalised DSM COG (DSM - DTM, >= 0) from the job's DTM/DSM tiles (computed if absent) + VRT mosaic"
    kind = "ndsm"
    produces = ("ndsm",)
    description = "nDSM: height above ground"
    Options = NdsmOptions
    reuses = ("dtm", "dsm")

    def compute(self, cloud: PointCloud, grid: GridSpec, ctx: TileContext) -> np.ndarray:
        """DSM - DTM from the job's DTM and DSM tiles when they were made from these points on this grid,
        else computed here (the stage also works alone)."""
        from cim.terrain.dtm import ndsm_grid

        o = self.options
        dtm = _stored_or_computed(DtmStage(), self.input_dir("dtm", ctx), cloud, grid, ctx)
        dsm = _stored_or_computed(DsmStage(DsmOptions(fill_max_edge=o.fill_max_edge)), self.input_dir("dsm", ctx),
                                  cloud, grid, ctx)
        return ndsm_grid(dsm, dtm)


def _stored_or_computed(
    stage: _RasterStage, folder: Path | None, cloud: PointCloud, grid: GridSpec, ctx: TileContext
) -> np.ndarray:
    """The tile's raster of ``stage`` from ``folder`` (an earlier stage's artefact) when it exists, covers exactly
    ``grid`` and was made from these points (same digest), else computed by ``stage``."""
    from cim.terrain.raster import read_raster, read_tags

    path = folder / f"{ctx.tile.key}.tif" if folder is not None else None
    if path is not None and path.is_file() and read_tags(path).get(POINTS_TAG) == stage.points_digest(cloud):
        values, found = read_raster(path)
        if found == grid:
            return values
    return stage.compute(cloud, grid, ctx)


class DensityStage(_RasterStage):
    name = "raster.density"
    summary = "Point density COG (points per square CRS unit, noise excluded) + VRT mosaic"
    kind = "density"
    produces = ("density",)
    description = "density: points per square unit"
    units = None
    nodata = None

    def compute(self, cloud: PointCloud, grid: GridSpec, ctx: TileContext) -> np.ndarray:
        from cim.terrain.dtm import density_grid

        return density_grid(cloud, grid)

