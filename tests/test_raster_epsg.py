"""COGs carry EPSG codes in their GeoKeys (horizontal and vertical), read from the file's own tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import rasterio
from PIL import Image

from cim import crs as crs_mod
from cim.pipeline.execute import run_job
from cim.pipeline.job import load_job
from cim.terrain.raster import GridSpec, read_raster, write_cog
from tests.helpers import delft_job, write_job

GEO_KEY_DIRECTORY = 34735
GT_MODEL_TYPE, PROJECTED_CS_TYPE, VERTICAL_CS_TYPE = 1024, 3072, 4096
USER_DEFINED = 32767


def geo_keys(path: Path) -> dict[int, int]:
    """GeoKey id -> value of the keys stored in the directory itself (TIFFTagLocation 0)."""
    with Image.open(path) as image:
        directory = list(image.tag_v2[GEO_KEY_DIRECTORY])
    count = directory[3]
    entries = [directory[4 + 4 * i: 8 + 4 * i] for i in range(count)]
    return {key: value for key, location, _, value in entries if location == 0}


def test_german_compound_crs_is_written_as_epsg_codes(tmp_path: Path) -> None:
    grid = GridSpec(xmin=410000.0, ymax=5480000.0, width=300, height=200, resolution=0.5)
    values = np.linspace(230.0, 260.0, grid.width * grid.height).reshape(grid.shape)
    values[:10, :10] = np.nan
    path = write_cog(tmp_path / "dtm.tif", values, grid, crs_mod.resolve("EPSG:25832+7837"))
    keys = geo_keys(path)
    assert keys[PROJECTED_CS_TYPE] == 25832 and keys[VERTICAL_CS_TYPE] == 7837 and keys[GT_MODEL_TYPE] == 1
    with rasterio.open(path) as ds:
        back = pyproj.CRS.from_wkt(ds.crs.to_wkt())
    assert [sub.to_epsg() for sub in back.sub_crs_list] == [25832, 7837]
    read, read_grid = read_raster(path)
    assert read_grid == grid
    np.testing.assert_array_equal(np.isnan(read), np.isnan(values))
    np.testing.assert_allclose(read[~np.isnan(read)], values[~np.isnan(values)].astype(np.float32))


def test_delft_dtm_tiles_are_epsg_7415(tmp_path: Path) -> None:
    extra = '[[stages]]\ntype = "raster.dtm"\nresolution = 1.0\n'
    job = load_job(write_job(tmp_path / "j.toml", delft_job(tmp_path / "o", extra=extra)))
    assert run_job(job, scheduler="threads").report.ok
    tiles = sorted((tmp_path / "o" / "dtm").glob("*.tif"))
    assert len(tiles) >= 4
    for path in tiles:
        keys = geo_keys(path)
        assert keys[PROJECTED_CS_TYPE] == 28992 and keys[VERTICAL_CS_TYPE] == 5709, path.name
        assert USER_DEFINED not in keys.values()
        with rasterio.open(path) as ds:
            assert ds.crs.to_epsg() == 7415
            assert np.isfinite(ds.read(1, masked=True).compressed()).all()


def test_a_crs_without_epsg_code_is_still_written_in_full(tmp_path: Path) -> None:
    custom = pyproj.CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=7.7 +k=1 +x_0=0 +y_0=0 +ellps=GRS80 +units=m")
    grid = GridSpec(xmin=0.0, ymax=1000.0, width=20, height=20, resolution=1.0)
    path = write_cog(tmp_path / "c.tif", np.ones(grid.shape), grid, custom)
    assert geo_keys(path)[PROJECTED_CS_TYPE] == USER_DEFINED
    with rasterio.open(path) as ds:
        assert pyproj.CRS.from_wkt(ds.crs.to_wkt()).equals(custom, ignore_axis_order=True)
