"""The German roof library (exact truth) scanned in the two documented styles, and the buildings chain scored on
it: AdV roof type, roof height RMSE against the true roofs, validity, no crash (issue 14 targets)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from cim.buildings.evaluate import roof_rmse
from cim.buildings.footprints import Footprint
from cim.buildings.partition import NODATA, carve_corners
from cim.buildings.run import reconstruct_cloud, summarise
from cim.buildings.validity import check_solid
from cim.synth.rooflib import ground_z, roof_library
from cim.synth.scanstyles import ALS, IMAGE_MATCHING, scan, surface

SCALE = 0.35  # every group of the library at least once (31 buildings)


@pytest.fixture(scope="module")
def library():
    return roof_library(seed=3, scale=SCALE)


@pytest.fixture(scope="module")
def scans(library):
    return {s.name: scan(library, s, seed=5) for s in (ALS, IMAGE_MATCHING)}


def _score(library, cloud, remove_offset: bool):
    models = reconstruct_cloud(cloud, [Footprint(b.id, b.footprint) for b in library])
    assert [m.id for m in models] == [b.id for b in library]
    types = [m.attributes.get("roof_type") == b.roof_type for b, m in zip(library, models)]
    rmse = [roof_rmse(m.lod22, b.solids, remove_offset=remove_offset) for b, m in zip(library, models) if m.lod22]
    valid = [check_solid(g).valid for m in models for g in (m.lod12, m.lod22) if g is not None]
    return models, float(np.mean(types)), np.asarray(rmse), float(np.mean(valid))


def test_library_truth(library):
    """Every truth solid is a valid closed solid, every standard AdV type and every plan/superstructure is there,
    and terraced houses share walls (touching footprints, no overlap)."""
    assert all(check_solid(s.faces).valid for b in library for s in b.parts)
    assert {1000, 2100, 3100, 3200, 3300, 3400, 3500} <= {b.roof_type for b in library}
    kinds = {b.kind for b in library}
    assert {"L-plan", "T-plan", "U-plan", "gable+dormer", "gable+chimney", "flat+parapet", "row", "annex"} <= kinds
    row = [b.footprint for b in library if b.kind == "row"][:4]
    assert row[0].touches(row[1]) and row[0].intersection(row[1]).area < 1e-6
    assert roof_library(seed=3, scale=SCALE)[5].footprint.equals_exact(library[5].footprint, 0)  # deterministic


def test_scan_styles(library, scans):
    """The documented parameters of both styles, measured on the scans against the true surface."""
    for style in (ALS, IMAGE_MATCHING):
        cloud = scans[style.name]
        first = cloud.return_number == 1
        on_roof = first & (cloud.point_source_id > 0)
        owner = cloud.point_source_id[on_roof] - 1
        area = sum(b.footprint.area for b in library)
        assert abs(on_roof.sum() / area - style.density) < 0.1 * style.density
        # height error away from edges (no rounding there): the offset and sigma of the style
        parts = [p for b in library for p in b.parts]
        x, y, z = cloud.x[on_roof], cloud.y[on_roof], cloud.z[on_roof]
        inner = np.array([library[o].footprint.buffer(-1.5).contains(shapely.Point(px, py))
                          for o, px, py in zip(owner[:3000], x[:3000], y[:3000])])
        dz = (z[:3000] - surface(parts, ground_z, x[:3000], y[:3000]))[inner]
        assert abs(np.median(dz) - style.offset) < 0.03
        assert abs(1.4826 * np.median(np.abs(dz - np.median(dz))) - style.sigma) < 0.3 * style.sigma + 0.01
        wrong = np.isin(cloud.classification[on_roof], (1, 2)).mean()
        assert abs(wrong - style.mislabel) < 0.02
        walls = cloud.return_number == 2
        assert walls.any() == (style.wall_density > 0)
    assert len(scan(library[:3], ALS, seed=5)) == len(scan(library[:3], ALS, seed=5))


def test_library_als(library, scans):
    models, type_acc, rmse, valid = _score(library, scans["als"], remove_offset=False)
    status = Counter(m.status for m in models)
    print(f"roof library ALS, {len(models)} buildings: type accuracy {type_acc:.3f}, roof RMSE median "
          f"{np.median(rmse):.3f} p90 {np.percentile(rmse, 90):.3f} max {rmse.max():.3f} m, valid {valid:.3f}, "
          f"{status}")
    assert status == {"lod22": len(library)}
    assert type_acc >= 0.95
    assert np.median(rmse) <= 0.10 and np.percentile(rmse, 75) <= 0.10
    assert np.percentile(rmse, 90) <= 0.06  # measured 0.022
    assert valid >= 0.995


def test_library_image_matching(library, scans):
    """Noisy, rounded, offset DSM points with a fifth of the roof points labelled 1 or 2."""
    models, type_acc, rmse, valid = _score(library, scans["image-matching"], remove_offset=True)
    status = Counter(m.status for m in models)
    print(f"roof library image matching, {len(models)} buildings: type accuracy {type_acc:.3f}, roof RMSE after "
          f"offset median {np.median(rmse):.3f} p90 {np.percentile(rmse, 90):.3f} max {rmse.max():.3f} m, "
          f"valid {valid:.3f}, {status}")
    assert status == {"lod22": len(library)}
    assert type_acc >= 0.90
    assert np.median(rmse) <= 0.25 and np.percentile(rmse, 75) <= 0.25
    assert np.percentile(rmse, 90) <= 0.25  # measured 0.209
    assert valid >= 0.995
    report = summarise(models)
    assert report["not_modelled"] == []


def test_classes_not_trusted_and_ground(library, scans):
    """Image matching labels a fifth of the roof points 1 or 2: ``auto`` takes the points by height inside the
    footprints (more points than by class), the ground never comes from roof points, and a cloud clipped to the
    footprints (no ground anywhere) gives flagged ground estimates listed in the report."""
    cloud = scans["image-matching"]
    sub = library[:8]
    fps = [Footprint(b.id, b.footprint) for b in sub]
    by_class = reconstruct_cloud(cloud, fps, building_points="classes")
    by_height = reconstruct_cloud(cloud, fps)  # auto
    ratio = [h.attributes["point_count"] / c.attributes["point_count"] for c, h in zip(by_class, by_height)]
    assert np.median(ratio) > 1.15  # ≈ 1 / 0.8
    for b, m in zip(sub, by_height):
        assert abs(m.attributes["h_ground"] - b.ground) < 0.35  # 10th percentile of σ 0.15 m ground points
        assert "ground_flag" not in m.attributes
    owner = cloud.point_source_id
    clipped = reconstruct_cloud(cloud[(owner > 0) & (owner <= len(sub))], fps)  # only these footprints
    assert all(m.attributes["ground_flag"] and m.attributes["ground_source"].startswith("estimate") for m in clipped)
    assert all(m.attributes["h_ground"] < m.attributes["h_roof_min"] - 2.0 for m in clipped)
    assert summarise(clipped)["ground_estimated"] == sorted(b.id for b in sub)


def test_buildings_with_unlabelled_roofs(library, scans):
    """A building whose roof points are all labelled 1 (as 79 of 752 in the held-out set): the cloud's classes
    look right overall (under 10 % of the points in footprints), so only that building takes its points by
    height – and still gets LoD2.2 and its roof type."""
    cloud = scans["als"]
    sub = library[:20]
    wrong = cloud.point_source_id == 1
    cls = cloud.classification.copy()
    cls[wrong] = 1
    cloud = type(cloud)({**{k: cloud[k] for k in ("x", "y", "z", "point_source_id")}, "classification": cls},
                        cloud.crs)
    models = reconstruct_cloud(cloud, [Footprint(b.id, b.footprint) for b in sub])
    assert [m.attributes.get("building_points") for m in models] == ["height"] + [None] * 19
    assert all(m.status == "lod22" for m in models)
    assert models[0].attributes["roof_type"] == sub[0].roof_type


def test_carve_corners_collection():
    """The reported crash: the corner square cuts a cell into a polygon plus a line (a GeometryCollection whose
    boundary is None); the polygon is carved, the line ignored."""
    arm = shapely.union_all([box(0, 0, 0.6, 0.6), box(0.6, -1, 0.8, 0.6), box(-1, -1, 0.8, -0.8),
                             box(-1, -1, -0.5, 0)])
    cells = [(arm, 0), (box(-2, 0, 0, 2), NODATA), (box(-0.5, -0.8, 0.6, 0), NODATA), (box(0, 0.6, 2, 2), NODATA)]
    assert shapely.intersection(arm, box(-0.5, -0.5, 0.5, 0.5)).geom_type == "GeometryCollection"
    out = carve_corners(cells, np.array([[0.0, 0.0]]))
    assert out is not cells
    assert abs(sum(c.area for c, _ in out) - sum(c.area for c, _ in cells)) < 1e-6
    assert out[0][0].area == pytest.approx(arm.area - 0.25)


def test_3dbag_solids_scanned_als(shared_data):
    """Real Dutch roofs: the 3DBAG LoD2.2 solids (CC BY 4.0) of a residential window (terraced rows, multi-level
    flat roofs) scanned in the ALS style and reconstructed in their own footprints; roof RMSE against the solids
    and the roof plane count. Reached: median RMSE 0.118 m (issue 14's target 0.15 m; 0.182 before partition
    cells took the plane of their 8 nearest inliers on a 0.25 m raster), p75 0.247 m (0.332), max 0.72 m (0.78),
    plane count equal for 89 % (target 80 %; 81 % before). The image-matching style of the same solids (which
    keeps the median-height partition rule): median 0.389 m after the offset, every building LoD2.2."""
    from cim.cityjson import read_cityjson
    from cim.synth.rooflib import buildings_from_solids

    solids = [g for g in read_cityjson(shared_data / "3dbag" / "3dbag_v210908_fd2cee53_5912.json") if g.lod == "2.2"]
    window = box(85750, 447050, 85880, 447180)
    lib = buildings_from_solids([s for s in solids if window.contains(shapely.Point(s.faces[0][0, :2]))])
    z0 = float(np.median([b.ground for b in lib]))
    cloud = scan(lib, ALS, seed=1, ground=lambda x, y: np.full(len(x), z0))
    models = reconstruct_cloud(cloud, [Footprint(b.id, b.footprint) for b in lib])
    rmse = np.array([roof_rmse(m.lod22, b.solids) for b, m in zip(lib, models)])
    same = np.mean([m.attributes.get("n_planes") == b.n_planes for b, m in zip(lib, models)])
    print(f"3DBAG window, {len(lib)} buildings, ALS: roof RMSE median {np.median(rmse):.3f} p75 "
          f"{np.percentile(rmse, 75):.3f} max {rmse.max():.3f} m; plane count equal {same:.2f}")
    assert len(lib) >= 15 and all(m.status == "lod22" for m in models)
    assert np.median(rmse) <= 0.15 and np.percentile(rmse, 75) <= 0.27
    assert same >= 0.85
    # image matching of the same solids: rounded steps and 0.15 m noise (measured: median 0.389 m after the offset)
    cloud = scan(lib, IMAGE_MATCHING, seed=1, ground=lambda x, y: np.full(len(x), z0))
    models = reconstruct_cloud(cloud, [Footprint(b.id, b.footprint) for b in lib])
    rmse = np.array([roof_rmse(m.lod22, b.solids, remove_offset=True) for b, m in zip(lib, models)])
    print(f"3DBAG window, image matching: roof RMSE after offset median {np.median(rmse):.3f} m")
    assert all(m.status == "lod22" for m in models)
    assert np.median(rmse) <= 0.40


def _rotated(b, degrees: float):
    """The library building turned by ``degrees`` about its footprint's centroid (solids, extras, footprint)."""
    from dataclasses import replace

    from shapely import affinity

    c = b.footprint.centroid
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])

    def turn(g):
        faces = [np.column_stack([(f[:, :2] - [c.x, c.y]) @ rot.T + [c.x, c.y], f[:, 2]]) for f in g.faces]
        return replace(g, faces=faces)

    return replace(b, footprint=affinity.rotate(b.footprint, degrees, origin=c), solids=[turn(g) for g in b.solids],
                   extras=[turn(g) for g in b.extras])


def _facet_angles(geom, truth) -> tuple[float, float]:
    """(largest azimuth error of the model's sloped roof faces of 2 m² or more against the nearest truth azimuth,
    spread of their slopes), degrees."""
    from cim.buildings.evaluate import roof_faces
    from cim.buildings.mesh import face_plane

    def sloped(g):
        return [(n, Polygon(f[:, :2]).area) for f in roof_faces(g) for n in [face_plane(f)[0]] if n[2] < 0.999]

    true_az = np.array([np.degrees(np.arctan2(n[0], n[1])) for t in truth for n, _ in sloped(t)])
    faces = [n for n, area in sloped(geom) if area >= 2.0]
    az = [np.abs((np.degrees(np.arctan2(n[0], n[1])) - true_az + 180) % 360 - 180).min() for n in faces]
    slopes = [np.degrees(np.arccos(n[2])) for n in faces]
    return float(max(az)), float(max(slopes) - min(slopes))


def test_regularised_roofs_rotated(library):
    """Data-driven roofs made regular (issue 14 item 1): L, T and U plans (all wings one pitch) turned by an odd
    23.7°. With regularisation the facets' slope directions are the footprint normals (eaves and ridges horizontal
    and parallel to the outline) and all facets share one slope where the points allow it: always with ALS; with
    image matching (σ 0.15 m, rounded edges) for the L and T plans, while the U plan's valleys bias its points
    beyond the test (measured: 0.27° tilts over ~950 points each, χ² 12.7 > 10.8), so it stays free. Without
    regularisation the noise tilts the facets by tenths of a degree. The roof height error stays within 5 cm of the
    free model's (the partition's edges move a little with the planes)."""
    from cim.buildings.model import ReconstructionParams

    plans = [_rotated(b, 23.7) for b in library if b.kind in ("L-plan", "T-plan", "U-plan")]
    assert [b.kind for b in plans] == ["L-plan", "T-plan", "U-plan"]
    fps = [Footprint(b.id, b.footprint) for b in plans]
    for style, n_regular in ((ALS, 3), (IMAGE_MATCHING, 2)):
        cloud = scan(plans, style, seed=7)
        regular = reconstruct_cloud(cloud, fps)
        free = reconstruct_cloud(cloud, fps, params=ReconstructionParams(regularise=False))
        done = 0
        for b, r, f in zip(plans, regular, free):
            assert r.attributes["roof_method"] == "data" and r.status == "lod22"
            (az_r, spread_r), (az_f, spread_f) = _facet_angles(r.lod22, b.solids), _facet_angles(f.lod22, b.solids)
            print(f"{style.name} {b.kind}: azimuth error {az_f:.3f} -> {az_r:.3f}°, slope spread {spread_f:.3f} -> "
                  f"{spread_r:.3f}°")
            done += az_r <= 0.05 and spread_r <= 0.05  # exact up to the 1 mm vertex grid (~0.01–0.03°)
            assert az_r <= az_f + 0.01
            rmse_r, rmse_f = (roof_rmse(m.lod22, b.solids, remove_offset=True) for m in (r, f))
            print(f"   roof RMSE {rmse_f:.3f} -> {rmse_r:.3f} m")
            assert rmse_r <= rmse_f + 0.05
        assert done == n_regular
        if style is IMAGE_MATCHING:
            assert min(_facet_angles(f.lod22, b.solids)[1] for b, f in zip(plans, free)) > 0.2
