"""Building geometry units: watertight extrusion of roof partitions, the validity checker, footprint reading /
repair / reprojection / derivation, plane detection and roof types on small exact roofs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from cim.buildings.evaluate import footprint_of, iou, roof_rmse, sample_roof_points
from cim.buildings.extrude import extrude_partition, footprint_cells
from cim.buildings.footprints import Footprint, derive_footprints, read_footprints
from cim.buildings.model import NO_POINTS, OK, ReconstructionParams, reconstruct_building
from cim.buildings.partition import carve_corners, label_raster, move_vertices, vectorise
from cim.buildings.planes import detect_planes
from cim.buildings.tiles import write_building_tiles
from cim.buildings.validity import check_solid, nonmanifold_edges, signed_volume
from cim.cityjson import BuildingGeometry
from cim.errors import CimWarning, InputError
from cim.tiles3d.glb import read_glb
from cim.synth.roofs import FLAT, GABLE, HALF_HIP, HIP, SHED, place, rectangle_solid
from test_tiles_glb import _table_column
from test_tiles_helpers import require_gltf_validator, validate_glbs


# ------------------------------------------------------------------------------------------------- extrusion

PARTITIONS = {
    "gable": ([box(0, 0, 10, 4), box(0, 4, 10, 8)], [(0, 0.75, 6.0), (0, -0.75, 12.0)], 480 + 0.5 * 8 * 3 * 10),
    "step": ([box(0, 0, 5, 8), box(5, 0, 12, 5)], [(0, 0, 5), (0, 0, 8)], 5 * 8 * 5 + 7 * 5 * 8),
    "crossing": ([box(0, 0, 5, 8), box(5, 0, 10, 8)], [(0, 0.5, 3), (0, -0.5, 7)], None),
    "hip": ([Polygon([(0, 0), (10, 0), (7, 3), (3, 3)]), Polygon([(10, 0), (10, 6), (7, 3)]),
             Polygon([(10, 6), (0, 6), (3, 3), (7, 3)]), Polygon([(0, 6), (0, 0), (3, 3)])],
            [(0, 1, 5), (-1, 0, 15), (0, -1, 11), (1, 0, 5)], None),
    "t-junction": ([box(0, 0, 4, 6), box(4, 0, 8, 3), box(4, 3, 8, 6)], [(0, 0, 4), (0, 0, 6), (0, 0, 9)],
                   4 * 6 * 4 + 4 * 3 * 6 + 4 * 3 * 9),
}


@pytest.mark.parametrize("name", sorted(PARTITIONS))
def test_extruded_partitions_are_valid_solids(name):
    cells, planes, volume = PARTITIONS[name]
    fp = shapely.union_all(cells)
    faces, sem = extrude_partition(cells, planes, 0.0, footprint=fp)
    v = check_solid(faces)
    assert v.valid, v.errors
    assert sem.count("RoofSurface") >= len(cells) and "GroundSurface" in sem and "WallSurface" in sem
    if volume is not None:
        assert signed_volume(faces) == pytest.approx(volume, rel=1e-6)


def test_footprint_with_courtyard_is_split_and_closed():
    fp = box(0, 0, 20, 20).difference(box(5, 5, 15, 15))
    cells = footprint_cells(fp)
    assert all(not c.interiors for c in cells)
    assert sum(c.area for c in cells) == pytest.approx(fp.area)
    faces, _ = extrude_partition(cells, [(0, 0, 6)] * len(cells), 0.0, footprint=fp)
    assert check_solid(faces).valid
    assert signed_volume(faces) == pytest.approx(fp.area * 6)


# -------------------------------------------------------------------------------------------------- validity

def _cube():
    faces, _ = extrude_partition([box(0, 0, 2, 2)], [(0, 0, 2)], 0.0)
    return faces


def test_validity_catches_broken_solids():
    faces = _cube()
    assert check_solid(faces).valid
    assert 302 in check_solid(faces[1:]).codes  # a face missing: not closed
    assert 307 in check_solid([f[::-1] for f in faces]).codes  # inward
    flipped = list(faces)
    flipped[0] = flipped[0][::-1]
    assert 307 in check_solid(flipped).codes  # one face flipped
    bent = [f.copy() for f in faces]
    roof = next(i for i, f in enumerate(bent) if np.allclose(f[:, 2], 2))
    bent[roof][0, 2] += 0.05
    assert 203 in check_solid(bent).codes  # non-planar
    # two cubes overlapping: faces of one pierce the other
    other, _ = extrude_partition([box(1, 1, 3, 3)], [(0, 0, 3)], 1.0)
    assert 306 in check_solid(faces + [f for f in other]).codes or not check_solid(faces + other).valid


# ------------------------------------------------------------------------------------------------ footprints

def test_read_delft_footprints_reprojects(repo_data):
    fps = read_footprints(repo_data / "delft" / "bgt_pand.sqlite", "EPSG:7415")
    assert len(fps) == 160
    assert len({f.id for f in fps}) == 160
    assert all(f.polygon.is_valid and f.polygon.exterior.is_ccw for f in fps)
    utm = read_footprints(repo_data / "delft" / "bgt_pand.sqlite", "EPSG:32631")
    assert utm[0].polygon.centroid.x == pytest.approx(fps[0].polygon.centroid.x + 0, abs=1e6)  # moved frame
    assert abs(utm[0].polygon.area - fps[0].polygon.area) < 0.01 * fps[0].polygon.area
    assert abs(utm[0].polygon.centroid.x - fps[0].polygon.centroid.x) > 1000


def test_sloppy_geojson_is_repaired_with_warnings(tmp_path):
    bowtie = [[0, 0, 5], [10, 10, 5], [10, 0, 5], [0, 10, 5], [0, 0, 5]]  # 3D, self-intersecting
    square = [[20, 0], [30, 0], [30, 10], [20, 10], [20, 0], [20, 0]]  # duplicate closing vertex
    multi = [[[[40, 0], [45, 0], [45, 5], [40, 0]]], [[[50, 0], [55, 0], [55, 5], [50, 0]]]]
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:25832"}},
           "features": [
               {"type": "Feature", "properties": {"id": "a"}, "geometry": {"type": "Polygon", "coordinates": [bowtie]}},
               {"type": "Feature", "properties": {"id": "b"}, "geometry": {"type": "Polygon", "coordinates": [square]}},
               {"type": "Feature", "properties": {"id": "b"}, "geometry": {"type": "MultiPolygon",
                                                                           "coordinates": multi}},
               {"type": "Feature", "properties": {"id": "e"}, "geometry": None},
           ]}
    path = tmp_path / "fp.geojson"
    path.write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fps = read_footprints(path, "EPSG:25832")
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, CimWarning))
    assert "repaired invalid" in messages and "split multi-part" in messages and "skipped" in messages
    assert "duplicate footprint ids" in messages
    ids = [f.id for f in fps]
    assert "b" in ids and "b~1-1" in ids and len(ids) == len(set(ids))
    assert all(f.polygon.is_valid and not f.polygon.has_z for f in fps)


def test_missing_file_and_missing_crs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_footprints(tmp_path / "nope.gpkg", "EPSG:25832")
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                           "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}
    p = tmp_path / "nocrs.json"
    p.write_text(json.dumps(doc))
    # GeoJSON without "crs" is WGS84 by definition; reprojecting works and must be explicit in the file name of
    # the error otherwise
    fps = read_footprints(p, "EPSG:25832")
    assert len(fps) == 1


def test_derived_footprint_of_a_rotated_building():
    rng = np.random.default_rng(5)
    faces, sem = rectangle_solid(14.0, 9.0, 6.0, 9.0, GABLE)
    truth = BuildingGeometry("t", place(faces, 23.0, 1000.0, 2000.0, 100.0), sem)
    pts = sample_roof_points(truth, 10.0, 0.03, rng)
    fps = derive_footprints(pts[:, 0], pts[:, 1])
    assert len(fps) == 1
    assert iou(fps[0].polygon, footprint_of(truth)) > 0.95
    assert len(fps[0].polygon.exterior.coords) == 5  # regularised to a rectangle


# ------------------------------------------------------------------------------------------- single buildings

@pytest.mark.parametrize("roof_type", [FLAT, SHED, GABLE, HIP, HALF_HIP])
def test_roof_types_and_accuracy_on_exact_roofs(roof_type):
    rng = np.random.default_rng(roof_type)
    faces, sem = rectangle_solid(15.0, 9.0, 6.0, 10.0, roof_type)
    truth = BuildingGeometry("t", place(faces, 31.0, 500.0, 500.0, 200.0), sem)
    pts = sample_roof_points(truth, 10.0, 0.03, rng)
    m = reconstruct_building(Footprint("b", footprint_of(truth)), pts, 200.0, ReconstructionParams())
    assert m.status == OK
    assert m.attributes["roof_type"] == roof_type
    assert roof_rmse(m.lod22, truth) < 0.1
    assert check_solid(m.lod22).valid and check_solid(m.lod12).valid
    assert m.attributes["h_ground"] == 200.0
    assert m.attributes["rmse_lod22"] < 0.1
    assert m.attributes["coverage"] > 0.95


def test_a_roof_that_cannot_be_typed_keeps_its_model_and_says_why(monkeypatch):
    """A failure in the roof-type decision must not cost the building its LoD2.2 model, nor pass silently."""
    def broken(*args, **kwargs):
        raise ValueError("no roof parts")

    monkeypatch.setattr("cim.buildings.model.building_roof_type", broken)
    faces, sem = rectangle_solid(15.0, 9.0, 6.0, 10.0, GABLE)
    truth = BuildingGeometry("t", place(faces, 31.0, 500.0, 500.0, 200.0), sem)
    pts = sample_roof_points(truth, 10.0, 0.03, np.random.default_rng(1))
    m = reconstruct_building(Footprint("b", footprint_of(truth)), pts, 200.0, ReconstructionParams())
    assert m.status == OK and m.lod22 is not None and roof_rmse(m.lod22, truth) < 0.1
    assert m.attributes["roof_type"] in (GABLE, 9999)  # a standard-shape fit may still name it
    assert m.attributes["reason"] == "roof type not decided: ValueError: no roof parts"


def test_roof_planes_never_extend_far_over_missing_points():
    """Only the south half of a gable has points: the north half must not get the south plane's ridge."""
    rng = np.random.default_rng(2)
    faces, sem = rectangle_solid(14.0, 10.0, 6.0, 10.0, GABLE)
    truth = BuildingGeometry("t", place(faces, 0.0, 0.0, 0.0, 0.0), sem)
    pts = sample_roof_points(truth, 10.0, 0.02, rng)
    pts = pts[pts[:, 1] < 0.0]  # ridge along x at y = 0
    params = ReconstructionParams()
    m = reconstruct_building(Footprint("b", footprint_of(truth)), pts, 0.0, params)
    assert m.status == OK
    # far from any point (y > max_extension) the roof is at most the low no-data height, never above the ridge
    from cim.buildings.evaluate import roof_height_at

    z_north = roof_height_at(m.lod22, np.array([0.0, 3.0]), np.array([4.0, 4.5]))
    assert np.all(z_north < 8.0)
    assert m.attributes["nodata_fraction"] > 0.2
    assert m.attributes["coverage"] < 0.7


def test_footprint_without_points_gets_lod0_and_a_status():
    m = reconstruct_building(Footprint("empty", box(0, 0, 5, 5)), np.zeros((0, 3)), 10.0)
    assert m.status == NO_POINTS
    assert m.lod0 is not None and m.lod12 is None and m.lod22 is None
    assert [g.lod for g in m.geometries()] == ["0"]


def test_plane_detection_is_deterministic():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 10, 600), rng.uniform(0, 8, 600)
    z = np.where(y < 4, 6 + 0.75 * y, 6 + 0.75 * (8 - y)) + rng.normal(0, 0.03, 600)
    xyz = np.column_stack([x, y, z])
    a, la = detect_planes(xyz)
    b, lb = detect_planes(xyz)
    assert len(a) == 2 and [p.coefficients for p in a] == [p.coefficients for p in b]
    assert np.array_equal(la, lb)
    assert sorted(round(p.slope_deg) for p in a) == [37, 37]


def test_courtyard_building_with_two_roof_heights():
    rng = np.random.default_rng(0)
    fp = box(0, 0, 30, 30).difference(box(10, 10, 20, 20))
    x, y = rng.uniform(0, 30, 9000), rng.uniform(0, 30, 9000)
    inside = shapely.contains_xy(fp, x, y)
    x, y = x[inside], y[inside]
    z = np.where(x < 15, 8.0, 11.0) + rng.normal(0, 0.02, len(x))
    m = reconstruct_building(Footprint("c", fp), np.column_stack([x, y, z]), 0.0)
    assert m.status == OK and m.attributes["roof_type"] == FLAT
    assert check_solid(m.lod22).valid and check_solid(m.lod12).valid
    assert footprint_of(m.lod22).area == pytest.approx(fp.area, rel=1e-4)
    assert signed_volume(m.lod22.faces) == pytest.approx(fp.area / 2 * 8 + fp.area / 2 * 11, rel=0.02)


def test_tiny_building_keeps_lod12_and_says_why():
    m = reconstruct_building(Footprint("s", box(0, 0, 2, 2)), np.array([[1, 1, 3.0], [1.5, 1.5, 3.1]]), 0.0)
    assert m.status == "lod12_only:too_few_points"
    assert m.lod12 is not None and m.lod22 is None and check_solid(m.lod12).valid


def test_building_tiles_without_roof_types_are_gltf_valid(tmp_path):
    """LoD1.2 blocks only: every roof type name is missing, written as empty strings (no placeholder text)."""
    rng = np.random.default_rng(3)
    x0, y0 = 410800.0, 5479700.0  # Kaiserslautern
    fps = [Footprint(f"b{i}", box(x0 + 20 * i, y0, x0 + 20 * i + 10, y0 + 8)) for i in range(3)]
    models = [reconstruct_building(fp, np.column_stack([rng.uniform(x0 + 20 * i, x0 + 20 * i + 10, 200),
                                                        rng.uniform(y0, y0 + 8, 200), rng.normal(245.0, 0.05, 200)]),
                                   236.0, lod2=False)
              for i, fp in enumerate(fps)]
    tileset = write_building_tiles(tmp_path / "t", models, "EPSG:25832+7837", tile_size=1000.0)
    glbs = sorted((tileset.parent / "tiles").glob("*.glb"))
    gltf, binary = read_glb(glbs[0].read_bytes())
    table = gltf["extensions"]["EXT_structural_metadata"]["propertyTables"][0]
    assert _table_column(gltf, binary, table, "roof_type_name") == ["", "", ""]
    assert _table_column(gltf, binary, table, "status") == ["lod12"] * 3
    require_gltf_validator()
    for report in validate_glbs(glbs):
        assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["messages"][:5]


def test_roofs_of_alternating_heights_around_one_corner_are_repaired():
    """Four roofs 6/9/6/9 m around one vertex: the two high blocks touch along a vertical edge (non-manifold);
    the repair hands a 0.5 m corner of one cell to a neighbour, and the building keeps its LoD2.2."""
    cells = [(box(0, 0, 5, 5), 0), (box(5, 0, 10, 5), 1), (box(5, 5, 10, 10), 2), (box(0, 5, 5, 10), 3)]
    heights = [(0.0, 0.0, 6.0), (0.0, 0.0, 9.0), (0.0, 0.0, 6.0), (0.0, 0.0, 9.0)]
    faces, _ = extrude_partition([c for c, _ in cells], heights, 0.0, footprint=box(0, 0, 10, 10))
    bad = nonmanifold_edges(faces)
    assert 303 in check_solid(faces).codes
    assert np.allclose(bad[:, :, :2], 5.0) and sorted(bad[0, :, 2]) == [6.0, 9.0]
    repaired = carve_corners(cells, bad.mean(axis=1)[:, :2], size=0.5)
    moved = sum(abs(a.area - b.area) for (a, _), (b, _) in zip(cells, repaired))
    assert moved == pytest.approx(0.5)  # 0.25 m² left one cell and joined another
    fixed, _ = extrude_partition([c for c, _ in repaired], [heights[k] for _, k in repaired], 0.0,
                                 footprint=box(0, 0, 10, 10))
    assert check_solid(fixed).valid
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 10, 4000), rng.uniform(0, 10, 4000)
    z = np.where((x < 5) == (y < 5), 6.0, 9.0) + rng.normal(0, 0.02, 4000)
    m = reconstruct_building(Footprint("checkerboard", box(0, 0, 10, 10)), np.column_stack([x, y, z]), 0.0)
    assert m.status == OK and check_solid(m.lod22).valid
    assert m.attributes["rmse_lod22"] < 0.1


def test_vertex_moves_that_collapse_a_cell_are_refused():
    """Moves that leave a cell's ring fewer than three distinct vertices (two corners of a triangle sent onto its
    third, as edge straightening did on a 3DBAG terrace: 'A linearring requires at least 4 coordinates') leave
    the cells as they were instead of raising."""
    cells = [(Polygon([(0, 0), (4, 0), (0, 4)]), 0), (Polygon([(4, 0), (4, 4), (0, 4)]), 1)]
    moves = {(4000, 0): (0.0, 0.0), (0, 4000): (0.0, 0.0)}
    assert move_vertices(cells, moves, box(0, 0, 4, 4)) is cells
    dropped = {(4000, 0): None, (0, 4000): None}
    assert move_vertices(cells, dropped, box(0, 0, 4, 4)) is cells
    ok = {(4000, 4000): (4.0, 4.0)}  # a move that changes nothing real still gives a valid tiling
    assert len(move_vertices(cells, ok, box(0, 0, 4, 4))) == 2


def test_near_flat_roofs_are_levelled_only_where_the_points_allow():
    """A roof draining at 1.5° (common on real flat roofs, e.g. the 3DBAG solids) keeps its slope: levelling it
    would put its edges ±0.13 m off; a flat roof with the same noise (3 cm) is made exactly horizontal."""
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 10, (2, 1500))
    noise = rng.normal(0, 0.03, 1500)
    for slope, flat in ((1.5, False), (0.0, True)):
        z = 5.0 + np.tan(np.radians(slope)) * x + noise
        planes, _ = detect_planes(np.column_stack([x, y, z]))
        assert len(planes) == 1
        if flat:
            assert planes[0].a == 0.0 and planes[0].b == 0.0
        else:
            assert planes[0].slope_deg == pytest.approx(1.5, abs=0.2)


def test_majority_filter_keeps_a_narrow_piece_the_points_show():
    """A 0.5 m strip 3 m below the roof around it (a step piece or gutter, one raster cell wide) survives the
    3x3 majority filter because its points contradict the majority's plane; speckle that the points do not
    contradict is still filtered."""
    from cim.buildings.planes import Plane

    g = np.arange(0.125, 10, 0.25)
    x, y = (v.ravel() for v in np.meshgrid(g, g))
    strip = (x > 5.0) & (x < 5.5)
    z = np.where(strip, 5.0, 8.0)
    labels = strip.astype(np.int64)
    planes = [Plane(0.0, 0.0, 8.0, np.nonzero(~strip)[0]), Plane(0.0, 0.0, 5.0, np.nonzero(strip)[0])]
    raster, transform, inside = label_raster(box(0, 0, 10, 10), np.column_stack([x, y, z]), labels, planes,
                                             mode_filter=1)
    col = int((5.25 - transform.c) / transform.a)
    assert (raster[inside] >= 0).all() and (raster[:, col][inside[:, col]] == 1).all()
    # the same strip 5 cm up (within the noise): its cells start on plane 1, and the filter gives them to plane 0
    speck = [Plane(0.0, 0.0, 8.0, np.nonzero(~strip)[0]), Plane(0.0, 0.0, 8.05, np.nonzero(strip)[0])]
    z = np.where(strip, 8.05, 8.0)
    raster, _, inside = label_raster(box(0, 0, 10, 10), np.column_stack([x, y, z]), labels, speck, mode_filter=0)
    assert (raster[:, col][inside[:, col]] == 1).all()
    raster, _, inside = label_raster(box(0, 0, 10, 10), np.column_stack([x, y, z]), labels, speck, mode_filter=1)
    assert (raster[inside] == 0).all()


def test_nearest_inliers_put_a_step_strip_where_its_points_are():
    """A 0.6 m strip 3 m below the roof along a wall 37° off the axes (an eaves strip), ALS-like points (10/m²,
    σ 3 cm): on a 0.25 m raster most cells hold no point; voting by the 8 nearest inliers puts the strip's cells
    within 2 m² (0.2 m on average along its 10 m) of the true strip, where taking the lowest plane in reach for
    the empty cells spreads the strip over the roof."""
    from shapely import affinity

    from cim.buildings.planes import Plane

    rng = np.random.default_rng(7)
    footprint = affinity.rotate(box(0, 0, 10, 6), 37, origin=(0, 0))
    strip = affinity.rotate(box(0, 0, 10, 0.6), 37, origin=(0, 0))
    x, y = rng.uniform(-4, 10, (2, 20 * int(10 * footprint.area)))
    keep = shapely.contains_xy(footprint, x, y)
    x, y = x[keep][: int(10 * footprint.area)], y[keep][: int(10 * footprint.area)]
    on = shapely.contains_xy(strip, x, y)
    xyz = np.column_stack([x, y, np.where(on, 5.0, 8.0) + rng.normal(0, 0.03, len(x))])
    planes = [Plane(0.0, 0.0, 8.0, np.nonzero(~on)[0]), Plane(0.0, 0.0, 5.0, np.nonzero(on)[0])]

    def strip_error(nearest: int) -> float:
        raster, transform, _ = label_raster(footprint, xyz, on.astype(np.int64), planes, cell=0.25, mode_filter=1,
                                            keep_misfit=np.inf, nearest=nearest)
        cells = vectorise(footprint, raster, transform, simplify=0.125)
        return shapely.union_all([c for c, v in cells if v == 1]).symmetric_difference(strip).area

    assert strip_error(8) <= 2.0
    assert strip_error(0) > 4.0
