"""Every CRS transformation a job needs is checked at planning (cim.crs_plan): BETA2007 for DHDN positions,
DHHN92 heights refused or explicitly accepted, a file whose declared CRS contradicts its coordinates."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyproj
import pytest
from pyproj.transformer import TransformerGroup

import cim
from cim import crs, crs_plan
from cim.errors import CimWarning, CrsError, InputError
from cim.io import las
from cim.points import Bounds

from tests.helpers import cim_cli, write_job

MUNICH_GK4 = (4468000.0, 5333000.0)  # DHDN / 3-degree Gauss-Kruger zone 4 (EPSG:31468), easting / northing
MUNICH_BOUNDS = Bounds(4467900.0, 5332900.0, 500.0, 4468100.0, 5333100.0, 530.0)
# The explicit PROJ pipeline a surveyor would write by hand: GK zone 4 (Bessel) -> BETA2007 NTv2 shift -> UTM 32
BETA2007_BY_HAND = ("+proj=pipeline +step +inv +proj=tmerc +lat_0=0 +lon_0=12 +k=1 +x_0=4500000 +y_0=0 +ellps=bessel "
                    "+step +proj=hgridshift +grids={grid} +step +proj=utm +zone=32 +ellps=GRS80")


@contextmanager
def without_shipped_grids() -> Iterator[None]:
    """PROJ as a user without cim's grids (and without network) has it."""
    original, network = pyproj.datadir.get_data_dir(), pyproj.network.is_network_enabled()
    shipped = str(crs.shipped_grid_dir())
    pyproj.datadir.set_data_dir(":".join(d for d in original.split(":") if d != shipped))
    pyproj.network.set_network_enabled(False)
    try:
        yield
    finally:
        pyproj.datadir.set_data_dir(original)
        pyproj.network.set_network_enabled(network)


def test_bkg_published_beta2007_test_point_is_met_to_a_centimetre() -> None:
    # BKG's BeTA2007 test data (BETA2007testdaten.csv): DHDN GK zone 2 -> ETRS89 UTM 32 and DHDN -> ETRS89 lon/lat
    to_utm = pyproj.Transformer.from_crs("EPSG:31466", "EPSG:25832", always_xy=True)
    x, y = to_utm.transform(2598417.333192, 5930677.980308)
    assert math.hypot(x - 399340.601863, y - 5928794.177992) < 0.01
    lon, lat = pyproj.Transformer.from_crs("EPSG:4314", "EPSG:4258", always_xy=True).transform(7.483333333333, 53.5)
    assert (lon, lat) == pytest.approx((7.482506019176, 53.498461143331), abs=1e-7)  # ~1 cm


def test_dhdn_in_bavaria_uses_the_shipped_beta2007_grid_not_the_seven_parameters() -> None:
    grid = crs.shipped_grid_dir() / "BETA2007.gsb"
    assert grid.is_file() and (crs.shipped_grid_dir() / "de_adv_README.txt").is_file()
    reference = pyproj.Transformer.from_pipeline(BETA2007_BY_HAND.format(grid=grid)).transform(*MUNICH_GK4)
    used = pyproj.Transformer.from_crs("EPSG:31468", "EPSG:25832", always_xy=True)
    assert math.dist(used.transform(*MUNICH_GK4), reference) < 0.01
    helmert = next(t for t in TransformerGroup("EPSG:31468", "EPSG:25832", always_xy=True).transformers
                   if "DHDN to ETRS89 (2)" in t.description)  # EPSG's 7-parameter DHDN -> ETRS89
    assert 0.5 < math.dist(helmert.transform(*MUNICH_GK4), reference) < 2.0  # the ~1 m the grid is there for
    # 3D Tiles placement (DHDN + DHHN2016 -> WGS 84 3D) goes through the same grid: compare on the ground in metres
    lon, lat, _ = crs.to_geographic3d(pyproj.CRS("EPSG:31468+7837")).transform(*MUNICH_GK4, 520.0)
    ref_lon, ref_lat = pyproj.Transformer.from_crs("EPSG:25832", "EPSG:4258", always_xy=True).transform(*reference)
    assert math.hypot((lon - ref_lon) * 111320 * math.cos(math.radians(lat)), (lat - ref_lat) * 110540) < 0.01
    assert crs.transformation_problem(pyproj.CRS("EPSG:31468+7837"), crs.GEOGRAPHIC_3D, MUNICH_BOUNDS) is None


def test_a_missing_grid_is_refused_naming_both_crss_and_the_grid() -> None:
    with without_shipped_grids(), pytest.raises(CrsError) as refused:
        crs_plan.check_transformations(pyproj.CRS("EPSG:31468"), [pyproj.CRS("EPSG:4326")], bounds=MUNICH_BOUNDS)
    message = str(refused.value)
    assert "EPSG:31468" in message and "EPSG:4326" in message and "de_adv_BETA2007.tif" in message
    with without_shipped_grids(), pytest.raises(CrsError, match="ballpark vertical.*de_bkg_gcg2016.tif"):
        crs_plan.check_transformations(pyproj.CRS("EPSG:31468+7837"), [crs.GEOGRAPHIC_3D], bounds=MUNICH_BOUNDS)
    with without_shipped_grids(), pytest.warns(CimWarning, match="de_adv_BETA2007.tif"):
        crs_plan.check_transformations(pyproj.CRS("EPSG:31468"), [pyproj.CRS("EPSG:4326")], bounds=MUNICH_BOUNDS,
                                       allow_ballpark=True)
    crs_plan.check_transformations(pyproj.CRS("EPSG:31468"), [pyproj.CRS("EPSG:4326")], bounds=MUNICH_BOUNDS)


def test_dhhn92_is_refused_by_name_or_accepted_as_dhhn2016_only_when_asked() -> None:
    dhhn92 = pyproj.CRS("EPSG:31468+5783")
    with pytest.raises(CrsError, match=r"DHHN92 \(EPSG:5783\).*accept_height_system"):
        crs_plan.working_crs(dhhn92, None)
    with pytest.warns(CimWarning, match="DHHN92 heights are taken as DHHN2016"):
        accepted = crs_plan.working_crs(dhhn92, "DHHN92-as-DHHN2016")
    assert crs.code(accepted) == "EPSG:31468+7837"
    lon, lat, h = crs.to_geographic3d(accepted).transform(*MUNICH_GK4, 520.0)
    assert 45.0 < h - 520.0 < 50.0  # the quasigeoid is ~47 m above the ellipsoid around Munich, not 0 (ballpark)
    assert crs_plan.working_crs(dhhn92, None, heights_needed=False) is dhhn92  # e.g. a DTM job: heights untouched
    with pytest.raises(CrsError, match="not DHHN92"):
        crs_plan.working_crs(pyproj.CRS("EPSG:25832+7837"), "DHHN92-as-DHHN2016")
    assert crs_plan.working_crs(pyproj.CRS("EPSG:25832+7837"), None).equals(pyproj.CRS("EPSG:25832+7837"))


def _munich_points(path: Path) -> Path:
    rng = np.random.default_rng(7)
    xyz = np.column_stack([MUNICH_GK4[0] + rng.uniform(0, 50, 300), MUNICH_GK4[1] + rng.uniform(0, 50, 300),
                           520.0 + rng.uniform(0, 10, 300)])
    return las.write(path, cim.PointCloud.from_xyz(xyz))


def _tiles_job(tmp_path: Path, extra: str = "") -> Path:
    cloud = _munich_points(tmp_path / "munich.laz")
    return write_job(tmp_path / "job.toml", f"""
[job]
output = "{(tmp_path / 'out').as_posix()}"
crs = "EPSG:31468+5783"
{extra}
[[stages]]
type = "read.las"
files = ["{cloud.as_posix()}"]
[[stages]]
type = "tile"
size = 250.0
[[stages]]
type = "tiles.pointcloud"
""")


def test_a_dhhn92_job_is_refused_at_planning_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(CrsError, match=r"DHHN92.*job\.accept_height_system = \"DHHN92-as-DHHN2016\""):
        cim.run(_tiles_job(tmp_path))
    assert not (tmp_path / "out").exists()  # nothing was partitioned or written


def test_a_dhhn92_job_accepted_as_dhhn2016_places_its_tiles_with_gcg2016(tmp_path: Path) -> None:
    job = _tiles_job(tmp_path, 'accept_height_system = "DHHN92-as-DHHN2016"')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cim.run(job)
    assert result.report.ok and result.points == 300
    assert any("taken as DHHN2016" in str(w.message) for w in caught)
    root = json.loads((tmp_path / "out" / "3dtiles" / "pointcloud" / "tileset.json").read_text())["root"]
    frame = np.array(root["transform"]).reshape(4, 4).T  # column-major ENU -> ECEF
    centre = frame @ np.array([*root["boundingVolume"]["box"][:3], 1.0])
    _, _, h = crs.ecef_to_geographic(*centre[:3])
    cloud = cim.read(tmp_path / "munich.laz")
    mid = [(v.min() + v.max()) / 2 for v in (cloud.x, cloud.y, cloud.z)]
    assert 45.0 < float(h) - mid[2] < 50.0  # the quasigeoid is ~47 m above the ellipsoid here; ballpark: ~0
    _, _, exact = crs.to_geographic3d(pyproj.CRS("EPSG:31468+7837")).transform(*mid)
    assert abs(float(h) - exact) < 0.05  # placed exactly as DHHN2016 heights (BETA2007 + GCG2016)


def test_cim_tiles_names_only_options_it_has(tmp_path: Path) -> None:
    cloud = _munich_points(tmp_path / "munich.laz")
    refused = cim_cli("tiles", str(cloud), "--out", str(tmp_path / "o"), "--crs", "EPSG:31468+5783")
    assert refused.returncode == 2 and "DHHN92" in refused.stderr and "Traceback" not in refused.stderr
    assert "--accept-height-system" in refused.stderr
    assert "--accept-height-system" in cim_cli("tiles", "--help").stdout
    assert not (tmp_path / "o").exists()


def test_copc_whose_crs_contradicts_its_coordinates_is_refused_naming_file_and_cause(shared_data: Path,
                                                                                      tmp_path: Path) -> None:
    copc = shared_data / "edge-cases" / "1.2-with-color.copc.laz"
    source = las.open_source(copc)
    tiles = [type("S", (), {"name": "tiles.pointcloud", "options": None})()]
    with pytest.raises(InputError) as refused:
        crs_plan.check_job(source.crs, tiles, [source])
    message = str(refused.value)
    assert str(copc) in message and "outside the area of use" in message and "feet" in message
    assert "us_noaa" in message  # and which grid the (wrong) CRS would need
    with pytest.warns(CimWarning, match="1.2-with-color.copc.laz.*feet"):  # nothing to transform: a warning
        assert crs_plan.check_job(source.crs, [], [source]).equals(source.crs)
    result = cim_cli("tiles", str(copc), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "1.2-with-color.copc.laz" in result.stderr and "Traceback" not in result.stderr


def test_footprints_in_their_own_crs_are_a_transformation_the_job_needs(tmp_path: Path) -> None:
    footprints = tmp_path / "footprints.geojson"
    footprints.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::31468"}},
        "features": [{"type": "Feature", "properties": {"id": "a"}, "geometry": {
            "type": "Polygon", "coordinates": [[[4468000, 5333000], [4468010, 5333000], [4468010, 5333010],
                                                [4468000, 5333000]]]}}]}))
    options = type("O", (), {"footprints": str(footprints), "footprints_crs": None})()
    stage = type("S", (), {"name": "buildings.lod2", "options": options})()
    needs = crs_plan.job_needs([stage])
    assert [crs.code(n.target) for n in needs] == ["EPSG:4326", "EPSG:31468"]
    assert str(footprints) in needs[1].purpose
    munich_utm = Bounds(691000.0, 5334300.0, 500.0, 691200.0, 5334500.0, 530.0)
    crs_plan.check_transformations(pyproj.CRS("EPSG:25832+7837"), needs, bounds=munich_utm)  # BETA2007 is there


def test_data_past_their_utm_zone_are_not_taken_for_a_mislabelled_file() -> None:
    utm32 = pyproj.CRS("EPSG:25832")
    x, y = pyproj.Transformer.from_crs("EPSG:4326", utm32, always_xy=True).transform(13.46, 48.57)  # Passau
    assert crs_plan.area_problem(utm32, Bounds(x - 100, y - 100, 0, x + 100, y + 100, 1)) is None
    x, y = pyproj.Transformer.from_crs("EPSG:4326", utm32, always_xy=True).transform(-3.70, 40.42)  # Madrid
    far = Bounds(x - 100, y - 100, 0, x + 100, y + 100, 1)
    assert "outside the area of use of EPSG:25832" in crs_plan.area_problem(utm32, far)
    assert crs_plan.likely_cause(utm32, far) == "is the declared CRS right?"
