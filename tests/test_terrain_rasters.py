"""Terrain rasters: COG validity, CRS, grid alignment, nodata, VRT mosaics, seams; the ``cim ground`` command."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from cim.io import las
from cim.points import PointCloud
from cim.terrain import GridSpec, dsm_grid, dtm_grid
from cim.terrain.raster import NODATA, read_raster, read_tags, write_cog
from tests.helpers import cim_cli, delft_job, write_job

CRS = "EPSG:7415"


@pytest.fixture(scope="module")
def four_tiles(repo_data, tmp_path_factory):
    """A 72 m x 88 m piece of Delft (AHN labels) cut by 50 m tiles into 2 x 2 tiles, run through ``cim dtm``."""
    tmp = tmp_path_factory.mktemp("terrain_rasters")
    pc = las.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs=CRS)
    pc = pc[(pc.y >= 447412) & (pc.y < 447500)]
    src = las.write(tmp / "piece.laz", pc)
    out = tmp / "out"
    done = cim_cli("dtm", str(src), "--out", str(out), "--resolution", "0.5", "--tile-size", "50", "--buffer", "25",
                   "--classify", "never", "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    return pc, out


def test_cogs_are_valid_aligned_and_georeferenced(four_tiles):
    _, out = four_tiles
    for kind in ("dtm", "dsm", "ndsm", "density"):
        tifs = sorted((out / kind).glob("*.tif"))
        assert len(tifs) == 4, kind
        for tif in tifs:
            valid, errors, _ = cog_validate(str(tif))
            assert valid, (tif, errors)
            with rasterio.open(tif) as ds:
                crs = pyproj.CRS.from_wkt(ds.crs.to_wkt())
                # horizontal + vertical CRS (GDAL 3.10 reads NAP's datum back under a wrong name, so compare
                # the horizontal part and the vertical CRS name; EPSG:25832+7837 round-trips exactly below)
                assert crs.is_compound, crs
                assert crs.sub_crs_list[0].to_epsg() == 28992 and crs.sub_crs_list[1].name == "NAP height"
                t = ds.transform
                assert t.a == 0.5 and t.e == -0.5
                assert t.c % 50 == 0 and t.f % 50 == 0  # the tile's core square on the global grid
                assert (ds.width, ds.height) == (100, 100)
                assert ds.dtypes[0] == "float32"
                if kind != "density":
                    assert ds.nodata == NODATA
        with rasterio.open(out / f"{kind}.vrt") as vrt:
            assert (vrt.width, vrt.height) == (200, 200)
            assert vrt.transform.c == 85000 and vrt.transform.f == 447500
            assert vrt.crs is not None


def test_tiled_dtm_equals_merged_dtm(four_tiles):
    pc, out = four_tiles
    with rasterio.open(out / "dtm.vrt") as vrt:
        tiled = vrt.read(1).astype(np.float64)
        nodata = vrt.nodata
        t = vrt.transform
    tiled[tiled == nodata] = np.nan
    grid = GridSpec(t.c, t.f, vrt.width, vrt.height, t.a)
    merged = dtm_grid(pc, grid)
    both = np.isfinite(merged) & np.isfinite(tiled)
    assert both.sum() > 0.6 * merged.size
    assert np.abs(merged[both] - tiled[both]).max() < 1e-4  # float32 storage
    # nodata agrees too (cells outside the data stay nodata in both)
    assert (np.isfinite(merged) != np.isfinite(tiled)).sum() <= 0.001 * merged.size
    # the DSM is local per cell: identical, and never below the DTM
    with rasterio.open(out / "dsm.vrt") as vrt:
        dsm = vrt.read(1, masked=True).filled(np.nan).astype(np.float64)
    assert np.nanmax(np.abs(dsm - dsm_grid(pc, grid))) < 1e-4
    with rasterio.open(out / "ndsm.vrt") as vrt:
        ndsm = vrt.read(1, masked=True).filled(np.nan)
    assert np.nanmin(ndsm) >= 0 and np.nanmax(ndsm) > 5  # buildings stand out
    # raster.ndsm reused the stored float32 DTM and DSM tiles of the job: DSM - DTM of the files, exactly
    with rasterio.open(out / "dtm.vrt") as vrt:
        stored = vrt.read(1, masked=True).filled(np.nan).astype(np.float64)
    assert np.array_equal(ndsm, np.maximum(dsm - stored, 0).astype(np.float32), equal_nan=True)
    with rasterio.open(out / "density.vrt") as vrt:
        density = vrt.read(1)
    assert density.sum() * 0.25 == pytest.approx(float(len(pc)), rel=1e-6)  # every point counted once


def test_ndsm_reuses_matching_dtm_and_dsm_tiles_only(repo_data, tmp_path):
    """raster.ndsm reads the job's DTM/DSM tiles when they were made from the same points on the same grid, and
    computes its own otherwise (a stage that also works alone)."""
    from cim.pipeline.stage import TileContext
    from cim.stages.terrain import DsmStage, DtmStage, NdsmStage
    from cim.tiling import Tile, TileGrid

    pc = las.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs=CRS)
    tile = Tile(1700, 8948, 50.0, 10.0)  # x 85000..85050, y 447400..447450
    pc = pc[(pc.x >= 84990) & (pc.x < 85060) & (pc.y >= 447390) & (pc.y < 447460)]
    crs = pyproj.CRS(CRS)

    def run(stage, folder):
        ctx = TileContext("t", tmp_path, crs, TileGrid(50.0, 10.0), folder, tile=tile)
        stage.run(pc, ctx)
        return read_raster(tmp_path / folder / f"{tile.key}.tif")[0]

    alone = run(NdsmStage(), "alone")  # no DTM/DSM stage wired to it: computed here
    wired = NdsmStage()
    wired.inputs = {"dtm": "dtm", "dsm": "dsm"}  # what a job with raster.dtm and raster.dsm before it wires
    dtm, dsm = run(DtmStage(), "dtm"), run(DsmStage(), "dsm")
    assert np.nanmax(np.abs(alone - np.maximum(dsm - dtm, 0))) < 1e-3
    # a DTM tile made from these points is reused as stored (here overwritten with a flat 0 m surface)
    path = tmp_path / "dtm" / f"{tile.key}.tif"
    tags = read_tags(path)
    write_cog(path, np.zeros_like(dtm), read_raster(path)[1], crs, tags=tags)
    assert np.allclose(run(wired, "ndsm"), np.maximum(dsm, 0), atol=1e-4, equal_nan=True)
    # ... but not for other points: one height changed and the digest no longer matches
    pc.z[0] += 1.0
    grid = read_raster(path)[1]
    expected = np.maximum(dsm_grid(pc, grid) - dtm_grid(pc, grid), 0)
    assert np.nanmax(np.abs(run(wired, "ndsm") - expected)) < 1e-3


def test_bcts_dsm_matches_reference_max_z(shared_data):
    """The reference DSM of the BCTS tiles is the max Z per 5 m cell of all points: reproduce it exactly."""
    ref, ref_grid = read_raster(shared_data / "bcts" / "bcts_dsm_5m.tif")
    pc = las.read(shared_data / "bcts" / "bcts_1.laz")
    ours = dsm_grid(pc, ref_grid, fill_max_edge=None)
    rows = slice(ref_grid.height - 50, ref_grid.height)  # bcts_1 is the southmost tile: compare its rows
    a, b = ours[rows], ref[rows]
    ok = np.isfinite(b) & (ref_grid.centers()[1][rows] < 629395)
    assert np.isfinite(a[ok]).all()
    assert np.abs(a[ok] - b[ok]).max() < 1e-3


def test_write_cog_overviews_nodata_and_determinism(tmp_path):
    grid = GridSpec.from_bounds(410000, 5479000, 410300, 5479300, 0.5)
    values = np.add.outer(np.arange(grid.height), np.arange(grid.width)).astype(float) * 0.01 + 230
    values[:10, :10] = np.nan
    crs = pyproj.CRS("EPSG:25832+7837")
    a = write_cog(tmp_path / "a.tif", values, grid, crs)
    b = write_cog(tmp_path / "b.tif", values, grid, crs)
    assert a.read_bytes() == b.read_bytes()
    assert cog_validate(str(a))[0]
    with rasterio.open(a) as ds:
        assert ds.overviews(1)  # 600 x 600 px: internal overviews
        assert ds.nodata == NODATA and ds.read(1)[0, 0] == NODATA
        assert pyproj.CRS.from_wkt(ds.crs.to_wkt()).equals(crs)
    back, g = read_raster(a)
    assert g == grid and np.isnan(back[:10, :10]).all()
    assert np.allclose(back[10:], values[10:], atol=1e-4)
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_grid_is_global_and_aligned():
    g = GridSpec.from_bounds(100.2, 200.7, 150.1, 260.0, 0.5)
    assert (g.xmin, g.ymax, g.ymin) == (100.0, 260.0, 200.5) and g.width == 101 and g.height == 119
    sub = g.subgrid(120.3, 210.1, 130.0, 220.0)
    r0, c0, h, w = g.window_of(sub)
    assert (sub.xmin - g.xmin) / 0.5 == c0 and (g.ymax - sub.ymax) / 0.5 == r0
    with pytest.raises(ValueError):
        GridSpec.from_bounds(0, 0, 1, 1, 0.0)


def test_cim_ground_writes_each_input_back(repo_data, tmp_path):
    pc = las.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs=CRS)
    west = pc[pc.x < 85036]
    east = pc[pc.x >= 85036]
    truth = np.concatenate([west["classification"], east["classification"]]) == 2
    for name, part in (("west.laz", west), ("east.laz", east)):
        part.set("classification", np.zeros(len(part), np.uint8))
        las.write(tmp_path / name, part)
    out = tmp_path / "classified"
    done = cim_cli("ground", str(tmp_path / "west.laz"), str(tmp_path / "east.laz"), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    classified = []
    for name, part in (("west.laz", west), ("east.laz", east)):
        got = las.read(out / name)
        assert len(got) == len(part)  # all points kept
        assert np.allclose(got.x, part.x, rtol=0, atol=1e-6) and np.allclose(got.z, part.z, rtol=0, atol=1e-6)
        assert got.crs is not None and got.crs.equals(pyproj.CRS(CRS))
        classified.append(got)
    ground = PointCloud.concat(classified)["classification"] == 2
    recall = (ground & truth).sum() / truth.sum()
    precision = (ground & truth).sum() / ground.sum()
    assert recall > 0.99 and precision > 0.85, (precision, recall)
    # same-named input next to an output folder that is the input folder is refused
    refused = cim_cli("ground", str(tmp_path / "west.laz"), "--out", str(tmp_path), timeout=120)
    assert refused.returncode != 0


def test_classification_stages_through_the_runner(four_tiles, tmp_path):
    """filter.outliers -> classify.ground -> classify.objects -> write.las on 2 x 2 tiles, labels recomputed."""
    pc, out = four_tiles
    src = out.parent / "piece.laz"
    classify = ("filter.outliers", "classify.ground", "classify.objects")
    stages = "".join(f'[[stages]]\ntype = "{t}"\n\n' for t in classify)
    body = delft_job(tmp_path / "out", size=50.0, buffer=25.0, extra="\n" + stages, files=src.as_posix())
    job = write_job(tmp_path / "job.toml", body)
    done = cim_cli("run", str(job), "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    tiles = sorted((tmp_path / "out" / "las").glob("*.laz"))
    assert len(tiles) == 4
    got = PointCloud.concat([las.read(t) for t in tiles])
    assert len(got) == len(pc)  # every point once (buffers dropped)
    # match points to the AHN labels by position
    key = lambda c: np.lexsort((np.round(c.z, 3), np.round(c.y, 3), np.round(c.x, 3)))  # noqa: E731
    a, b = pc["classification"][key(pc)], got["classification"][key(got)]
    ground_agree = ((a == 2) == (b == 2)).mean()
    tp = ((a == 6) & (b == 6)).sum()
    f1 = 2 * tp / ((a == 6).sum() + (b == 6).sum())
    assert ground_agree > 0.95 and f1 > 0.85, (ground_agree, f1)
