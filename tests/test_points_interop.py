"""PointCloud in notebooks: crop by bounds and polygon, hand over to open3d, pyvista and pandas (and back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from matplotlib.path import Path as MplPath

from cim.io import las
from cim.points import Bounds, PointCloud


@pytest.fixture(scope="module")
def delft(repo_data: Path) -> PointCloud:
    return las.read(repo_data / "delft" / "ahn3_cropped_2.laz", crs="EPSG:7415")


def test_crop_by_2d_and_3d_bounds(delft: PointCloud) -> None:
    b = delft.bounds
    mid_x, mid_y = (b.minx + b.maxx) / 2, (b.miny + b.maxy) / 2
    left = delft.crop((b.minx, b.miny, mid_x, b.maxy))
    right = delft.crop((np.nextafter(mid_x, np.inf), b.miny, b.maxx, b.maxy))
    assert len(left) + len(right) == len(delft) and 0 < len(left) < len(delft)
    assert left.x.max() <= mid_x < right.x.min()
    low = delft.crop(Bounds(b.minx, b.miny, b.minz, mid_x, mid_y, 2.0))
    assert len(low) > 1000 and low.z.max() <= 2.0 and low.x.max() <= mid_x and low.y.max() <= mid_y
    assert low.names == delft.names and low.crs == delft.crs


def test_crop_to_a_polygon_matches_an_independent_point_in_polygon(delft: PointCloud) -> None:
    b = delft.bounds
    cx, cy, r = (b.minx + b.maxx) / 2, (b.miny + b.maxy) / 2, 60.0
    angles = np.linspace(0, 2 * np.pi, 9)[:-1]
    radii = np.where(np.arange(8) % 2 == 0, r, r / 3)  # a concave star
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    inside = delft.crop_polygon(shapely.Polygon(ring))
    truth = MplPath(np.vstack([ring, ring[:1]])).contains_points(np.column_stack([delft.x, delft.y]))
    assert len(inside) == int(truth.sum()) > 1000
    np.testing.assert_array_equal(np.sort(inside.gps_time), np.sort(delft.gps_time[truth]))


def test_crop_to_building_footprints_gives_building_points(repo_data: Path, delft: PointCloud) -> None:
    _, _, geoms, _ = pyogrio.raw.read(repo_data / "delft" / "bgt_pand.sqlite", return_fids=False)
    footprints = shapely.from_wkb(geoms)
    b = delft.bounds
    here = footprints[shapely.intersects(footprints, shapely.box(b.minx, b.miny, b.maxx, b.maxy))]
    roofs = delft.crop_polygon(shapely.MultiPolygon(list(shapely.get_parts(shapely.union_all(here)))))
    assert len(roofs) > 10_000
    assert (roofs.classification == 6).mean() > 0.8  # AHN3 labels the points on footprints as building


def test_open3d_round_trip_with_colours(delft: PointCloud) -> None:
    part = delft.crop((delft.bounds.minx, delft.bounds.miny, delft.bounds.minx + 40, delft.bounds.miny + 40))
    rng = np.random.default_rng(3)
    for name in ("red", "green", "blue"):
        part.set(name, rng.integers(0, 256, len(part)))  # 8-bit values in 16-bit fields
    pcd = part.to_open3d()
    box = pcd.get_axis_aligned_bounding_box()
    np.testing.assert_allclose(box.min_bound, part.bounds[:3])
    np.testing.assert_allclose(box.max_bound, part.bounds[3:])
    np.testing.assert_allclose(np.asarray(pcd.colors)[:, 0], part.red / 255.0)
    back = PointCloud.from_open3d(pcd.voxel_down_sample(1.0), part.crs)
    assert 0 < len(back) < len(part) and back.crs == part.crs
    assert back.red.dtype == np.uint16 and back.red.max() > 255
    exact = PointCloud.from_open3d(pcd)
    np.testing.assert_array_equal(exact.xyz, part.xyz)
    np.testing.assert_array_equal(exact.green, part.green.astype(np.int64) * 257)


def test_pyvista_polydata_carries_every_dimension(delft: PointCloud) -> None:
    poly = delft.to_pyvista()
    assert poly.n_points == len(delft)
    b = delft.bounds
    np.testing.assert_allclose(poly.bounds, [b.minx, b.maxx, b.miny, b.maxy, b.minz, b.maxz])
    assert sorted(poly.point_data.keys()) == sorted(n for n in delft.names if n not in "xyz")
    np.testing.assert_array_equal(poly.point_data["classification"], delft.classification)
    ground = poly.threshold([2, 2], scalars="classification")
    assert ground.n_points == int((delft.classification == 2).sum())


def test_pandas_round_trip_and_group_by(delft: PointCloud) -> None:
    frame = delft.to_pandas()
    assert list(frame.columns) == delft.names and len(frame) == len(delft)
    counts = frame.groupby("classification").size()
    assert counts.to_dict() == {int(c): int(n) for c, n in enumerate(np.bincount(delft.classification)) if n}
    mean_z = frame.groupby("classification")["z"].mean()
    assert mean_z[2] == pytest.approx(delft.z[delft.classification == 2].mean())
    frame.loc[0, "z"] = -1.0  # the frame is a copy
    assert delft.z[0] != -1.0
    back = PointCloud.from_pandas(frame.iloc[1:], delft.crs)
    assert back.names == delft.names and back.crs == delft.crs
    for name in delft.names:
        np.testing.assert_array_equal(back[name], delft[name][1:])
        assert back[name].dtype == delft[name].dtype
