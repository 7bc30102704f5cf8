"""Writing terrain rasters: Cloud-Optimized GeoTIFF tiles on the global grid and VRT mosaics over them.

COGs are written with GDAL's COG driver: 256 x 256 tiles, DEFLATE with the floating-point predictor, internal
overviews (averaged, nodata-aware) whenever the raster is larger than one block, float32 with nodata -9999, and
the full CRS -- a compound horizontal + vertical CRS (e.g. EPSG:25832+7837) goes into the GeoTIFF keys as EPSG
codes (ProjectedCSType 25832, VerticalCSType 7837), so GDAL, QGIS and rasterio recognise it with its datum. Files are written atomically and are byte-for-byte
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pyproj
import rasterio
from rasterio.crs import CRS as RioCRS

from cim.fileutil import atomic_write, write_text_atomic
from cim.terrain.grid import GridSpec, cell_reduce
from cim.terrain.params import NODATA

__all__ = ["GridSpec", "NODATA", "write_cog", "write_vrt", "read_raster", "read_tags", "cell_reduce"]

def _rio_crs(crs: pyproj.CRS | None) -> RioCRS | None:
    """The CRS for GDAL by EPSG code where it has one (or its horizontal and vertical parts have), so that the
    GeoKeys carry the codes (ProjectedCSType, VerticalCSType) instead of user-defined ones; else by WKT."""
    if crs is None:
        return None
    code = crs.to_epsg(min_confidence=100)
    if code is not None:
        return RioCRS.from_epsg(code)
    parts = [sub.to_epsg(min_confidence=100) for sub in crs.sub_crs_list]
    if len(parts) == 2 and None not in parts:
        return RioCRS.from_string(f"EPSG:{parts[0]}+{parts[1]}")
    return RioCRS.from_wkt(crs.to_wkt())


def write_cog(
    path: str | Path,
    values: np.ndarray,
    grid: GridSpec,
    crs: pyproj.CRS | None,
    *,
    nodata: float | None = NODATA,
    description: str | None = None,
    units: str | None = "metre",
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a (height, width) array as a single-band float32 COG; NaN cells become ``nodata``.

    ``tags`` are stored as GDAL dataset metadata (read back with :func:`read_tags`)."""
    path = Path(path)
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != grid.shape:
        raise ValueError(f"array shape {arr.shape} does not match grid {grid.shape}")
    out = arr.astype(np.float32)
    if nodata is not None:
        out[~np.isfinite(arr)] = np.float32(nodata)
    profile = dict(
        driver="COG",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="float32",
        crs=_rio_crs(crs),
        transform=grid.transform,
        nodata=nodata,
        compress="DEFLATE",
        predictor=3,
        blocksize=256,
        overview_resampling="average",
        bigtiff="IF_SAFER",
        geotiff_version="1.1",  # 1.1 keys carry the vertical CRS (1.0 drops it)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as ds:
            ds.write(out, 1)
            if description:
                ds.set_band_description(1, description)
            if units:
                ds.set_band_unit(1, units)
            if tags:
                ds.update_tags(**tags)
    return path


def read_raster(path: str | Path) -> tuple[np.ndarray, GridSpec]:
    """A raster's band 1 as float64 with nodata as NaN, and its grid."""
    with rasterio.open(path) as ds:
        arr = ds.read(1).astype(np.float64)
        if ds.nodata is not None:
            arr[arr == ds.nodata] = np.nan
        t = ds.transform
        grid = GridSpec(xmin=t.c, ymax=t.f, width=ds.width, height=ds.height, resolution=t.a)
    return arr, grid


def read_tags(path: str | Path) -> dict[str, str]:
    """A raster's dataset metadata (the ``tags`` given to :func:`write_cog`)."""
    with rasterio.open(path) as ds:
        return ds.tags()


def write_vrt(
    path: str | Path,
    sources: Sequence[tuple[str | Path, GridSpec]],
    crs: pyproj.CRS | None,
    *,
    nodata: float | None = NODATA,
    description: str | None = None,
) -> Path:
    """Write a VRT mosaic of same-resolution, grid-aligned rasters (paths stored relative to the VRT)."""
    path = Path(path)
    if not sources:
        raise ValueError("a VRT mosaic needs at least one source raster")
    res = sources[0][1].resolution
    for _, g in sources:
        if not math.isclose(g.resolution, res):
            raise ValueError("all rasters of a mosaic must share one resolution")
    xmin = min(g.xmin for _, g in sources)
    ymax = max(g.ymax for _, g in sources)
    xmax = max(g.xmax for _, g in sources)
    ymin = min(g.ymin for _, g in sources)
    width = round((xmax - xmin) / res)
    height = round((ymax - ymin) / res)
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if crs is not None:
        lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>')
    lines.append(f"  <GeoTransform>{xmin!r}, {res!r}, 0.0, {ymax!r}, 0.0, {-res!r}</GeoTransform>")
    lines.append('  <VRTRasterBand dataType="Float32" band="1">')
    if description:
        lines.append(f"    <Description>{escape(description)}</Description>")
    if nodata is not None:
        lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
    for src, g in sorted(sources, key=lambda s: (-s[1].ymax, s[1].xmin)):
        rel = Path(src).resolve().relative_to(path.parent.resolve()).as_posix()
        xoff = round((g.xmin - xmin) / res)
        yoff = round((ymax - g.ymax) / res)
        lines += [
            "    <ComplexSource>",
            f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
            "      <SourceBand>1</SourceBand>",
            f'      <SourceProperties RasterXSize="{g.width}" RasterYSize="{g.height}" DataType="Float32" '
            'BlockXSize="256" BlockYSize="256" />',
            f'      <SrcRect xOff="0" yOff="0" xSize="{g.width}" ySize="{g.height}" />',
            f'      <DstRect xOff="{xoff}" yOff="{yoff}" xSize="{g.width}" ySize="{g.height}" />',
        ]
        if nodata is not None:
            lines.append(f"      <NODATA>{nodata!r}</NODATA>")
        lines.append("    </ComplexSource>")
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    write_text_atomic(path, "\n".join(lines))
    return path
