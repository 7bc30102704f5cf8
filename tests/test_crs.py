"""Heights must be right: shipped geoid grids, ballpark refusal, ENU frames."""

from __future__ import annotations


import numpy as np
import pyproj
import pytest

import cim
from cim import crs
from cim.errors import CimWarning, CrsError


def test_dhhn2016_to_ellipsoidal_in_kaiserslautern_uses_gcg2016() -> None:
    transformer = crs.to_geographic3d(pyproj.CRS("EPSG:25832+7837"))
    lon, lat, h = transformer.transform(410800.0, 5479700.0, 235.0)
    assert h == pytest.approx(283.697, abs=0.005)  # BKG GCG2016 quasigeoid, not a ballpark
    assert (lon, lat) == pytest.approx((7.76899, 49.46340), abs=1e-4)
    assert "ballpark" not in transformer.description.lower()


def test_nap_to_ellipsoidal_in_delft_uses_nlgeo2018() -> None:
    lon, lat, h = crs.to_geographic3d(pyproj.CRS("EPSG:7415")).transform(85000.0, 447500.0, 0.0)
    assert 43.0 < h < 44.0  # NLGEO2018 quasi-geoid height in Delft is ~43.5 m


def test_ballpark_vertical_transformation_is_refused_and_names_the_grid() -> None:
    bc = pyproj.CRS("EPSG:3005+5713")  # CGVD28 needs a Canadian grid that cim does not ship
    with pytest.raises(CrsError, match="ballpark|exact vertical"):
        crs.to_geographic3d(bc)
    with pytest.warns(CimWarning, match="exact vertical"):
        crs.to_geographic3d(bc, allow_ballpark=True)


def test_a_ballpark_datum_step_is_refused_and_a_known_datum_shift_is_not() -> None:
    utm32 = pyproj.CRS("EPSG:25832")
    with pytest.raises(CrsError, match="EPSG:4301.*ballpark"):  # PROJ knows no ETRS89 -> Tokyo datum shift
        crs.exact_transformer(utm32, pyproj.CRS("EPSG:4301"))
    assert crs.transformation_problem(utm32, pyproj.CRS("EPSG:4326")) is None  # ETRS89 -> WGS 84 (1): EPSG's
    x, y = crs.exact_transformer(utm32, pyproj.CRS("EPSG:4326")).transform(410800.0, 5479700.0)
    assert (x, y) == pytest.approx((7.76899, 49.46340), abs=1e-4)  # as in the GCG2016 test above


def test_two_dimensional_crs_warns_that_heights_are_taken_as_ellipsoidal() -> None:
    crs._to_geographic3d.cache_clear()
    with pytest.warns(CimWarning, match="no vertical CRS"):
        crs.to_geographic3d(pyproj.CRS("EPSG:32632"))


def test_ecef_from_enu_is_a_rigid_frame_at_the_origin() -> None:
    matrix = crs.ecef_from_enu(7.769, 49.463, 283.7)
    rotation = matrix[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    lon, lat, h = crs.ecef_to_geographic(*matrix[:3, 3])
    assert (lon, lat, h) == pytest.approx((7.769, 49.463, 283.7), abs=1e-6)
    # 10 m "up" in ENU raises the ellipsoidal height by 10 m
    up = matrix @ np.array([0, 0, 10.0, 1])
    assert crs.ecef_to_geographic(*up[:3])[2] == pytest.approx(293.7, abs=1e-6)


def test_resolve_rejects_garbage_with_a_clear_error() -> None:
    with pytest.raises(CrsError, match="not a coordinate reference system"):
        crs.resolve("EPSG:nonsense")
    assert crs.resolve(None) is None
    assert crs.code(crs.resolve("EPSG:25832+7837")) == "EPSG:25832+7837"


def test_import_registers_the_shipped_grids() -> None:
    assert str(crs.shipped_grid_dir()) in pyproj.datadir.get_data_dir()
    assert (crs.shipped_grid_dir() / "de_bkg_gcg2016.tif").is_file()
    assert cim.__version__


def test_transformers_are_each_threads_own() -> None:
    """pyproj's transformers of a TransformerGroup are not thread-safe: two tile steps of the threads scheduler
    transforming through one broke PROJ's reading of the NLGEO2018 grid. Each thread gets its own, once."""
    from concurrent.futures import ThreadPoolExecutor

    rd_nap = pyproj.CRS("EPSG:7415")
    here = crs.to_geographic3d(rd_nap)
    assert crs.to_geographic3d(rd_nap) is here
    with ThreadPoolExecutor(1) as pool:
        there = pool.submit(crs.to_geographic3d, rd_nap).result()
        assert there is not here and pool.submit(crs.to_geographic3d, rd_nap).result() is there
    p = (85000.0, 447000.0, 2.0)
    assert there.transform(*p) == here.transform(*p)  # the same operation (NAP heights through the geoid grid)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(crs.exact_transformer, rd_nap, pyproj.CRS("EPSG:4979")).result()
    assert other is not crs.exact_transformer(rd_nap, pyproj.CRS("EPSG:4979"))
