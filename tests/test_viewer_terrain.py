"""``tiles.terrain``: the DTM as 3D Tiles mesh tiles whose vertices are the DTM's cells, placed like the points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

import cim.crs
from cim.errors import InputError
from cim.terrain.grid import GridSpec
from cim.terrain.raster import write_cog, write_vrt
from cim.tiles3d.check import check_tileset
from cim.tiles3d.glb import Y_UP_FROM_Z_UP, accessor_array, node_matrix, read_glb
from cim.tiles3d.placement import ecef_to_geodetic
from cim.tiles3d.terrain import grid_mesh, write_terrain_tiles
from test_tiles_helpers import KL_CRS, gltf_validator_available, schema_errors, validate_glbs

RES = 0.5
CELLS = 60  # per tile edge: 30 m tiles, 2 x 2 of them


def _height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A hill on a slope around Kaiserslautern's heights (DHHN2016)."""
    return 240.0 + 0.05 * (x - 410900) + 8.0 * np.exp(-((x - 410930) ** 2 + (y - 5479830) ** 2) / 300.0)


@pytest.fixture(scope="module")
def dtm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("terrain")
    crs = cim.crs.resolve(KL_CRS)
    sources = []
    for i in range(2):
        for j in range(2):
            grid = GridSpec(410900.0 + i * CELLS * RES, 5479860.0 - j * CELLS * RES, CELLS, CELLS, RES)
            x = grid.xmin + (np.arange(CELLS) + 0.5) * RES
            y = grid.ymax - (np.arange(CELLS) + 0.5) * RES
            values = _height(*np.meshgrid(x, y)).astype(np.float32)
            if (i, j) == (1, 1):
                values[10:20, 10:25] = np.nan  # a hole (no ground there)
            path = out / "dtm" / f"{i}_{j}.tif"
            write_cog(path, values, grid, crs)
            sources.append((path, grid))
    write_vrt(out / "dtm.vrt", sources, crs)
    return out


@pytest.fixture(scope="module")
def tileset(dtm: Path) -> Path:
    done = write_terrain_tiles(dtm / "terrain", sorted((dtm / "dtm").glob("*.tif")), cim.crs.resolve(KL_CRS),
                               step=2, workers=2)
    assert done["tiles"] == 4
    x0, y0, z0, x1, y1, z1 = done["bounds"]  # the tiles' area and the DTM's height range (for the STAC item)
    assert (x0, y0, x1, y1) == (410900.0, 5479800.0, 410960.0, 5479860.0)
    assert 230 < z0 < z1 < 260
    return dtm / "terrain" / "tileset.json"


def _ecef_vertices(tileset: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """ECEF positions of every content's vertices (tile transforms x glTF node, glTF y-up undone) and triangles."""
    doc = json.loads(tileset.read_text())
    root = np.asarray(doc["root"]["transform"], float).reshape(4, 4).T
    points, triangles = [], []
    for child in doc["root"]["children"]:
        world = root @ np.asarray(child["transform"], float).reshape(4, 4).T
        gltf, binary = read_glb((tileset.parent / child["content"]["uri"]).read_bytes())
        prim = gltf["meshes"][0]["primitives"][0]
        pos = accessor_array(gltf, binary, prim["attributes"]["POSITION"]).astype(np.float64)
        m = world @ np.linalg.inv(Y_UP_FROM_Z_UP) @ node_matrix(gltf)
        points.append(pos @ m[:3, :3].T + m[:3, 3])
        triangles.append(accessor_array(gltf, binary, prim["indices"]).reshape(-1, 3))
    return np.concatenate(points), triangles


def test_vertex_heights_are_the_dtm_after_the_placement_round_trip(tileset: Path, dtm: Path) -> None:
    ecef, _ = _ecef_vertices(tileset)
    llh = ecef_to_geodetic(ecef)
    to4979 = cim.crs.to_geographic3d(cim.crs.resolve(KL_CRS))
    x, y, z = to4979.transform(llh[:, 0], llh[:, 1], llh[:, 2], direction="INVERSE")
    with rasterio.open(dtm / "dtm.vrt") as src:
        sampled = np.array([v[0] for v in src.sample(zip(x, y))], float)
    assert np.abs(z - sampled).max() < 2e-3  # float32 vertices of a 30 m tile, through ECEF and the geoid
    assert np.abs(z - _height(x, y)).max() < 2e-3
    # vertices stand on cell centres
    assert np.abs((x - 410900.0) / RES - 0.5 - np.round((x - 410900.0) / RES - 0.5)).max() < 2e-3
    # every second cell and the last two of each tile: 32 x 32 samples; the east and south tiles lose the row or
    # column of the neighbour they do not have, the hole takes 5 x 8 samples
    assert len(ecef) == 32 * 32 + 2 * 32 * 31 + 31 * 31 - 5 * 8
    # the geoid is in there: ellipsoidal heights are ~48 m above the DHHN2016 heights at Kaiserslautern
    assert 40 < np.median(llh[:, 2] - z) < 55


def test_neighbouring_tiles_share_their_edge_vertices(tileset: Path) -> None:
    from scipy.spatial import cKDTree

    ecef, _ = _ecef_vertices(tileset)
    pairs = cKDTree(ecef).query_pairs(1e-3)
    # the four seams carry 32 + 32 + 31 + 31 samples; the middle corner is in all four tiles (6 pairs)
    assert len(pairs) == (31 + 31 + 30 + 30) + 6


def test_holes_stay_holes(dtm: Path) -> None:
    with rasterio.open(dtm / "dtm" / "1_1.tif") as src:
        values = src.read(1, masked=True).filled(np.nan)
        grid = GridSpec(src.transform.c, src.transform.f, src.width, src.height, RES)
    vertices, triangles = grid_mesh(values, grid, 1)
    assert np.isfinite(vertices).all()
    assert len(vertices) == values.size - 10 * 15
    # every triangle with a missing corner is gone: both of the 11 x 16 quads around the hole but one of the
    # north-west and south-east ones (their diagonal leaves a triangle clear of the hole)
    assert len(triangles) == 2 * (CELLS - 1) ** 2 - 2 * 11 * 16 + 2
    # counter-clockwise seen from above: the normals point up
    p = vertices[triangles]
    assert (np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2] > 0).all()


def test_tileset_passes_schema_box_and_gltf_checks(tileset: Path) -> None:
    doc = json.loads(tileset.read_text())
    assert schema_errors(doc, "tileset.schema.json") == []
    report = check_tileset(tileset)
    assert report.ok, report.problems
    assert report.tiles == 5 and report.skipped == 4  # the four meshes (boxes checked, points not decoded)
    glbs = sorted((tileset.parent / "tiles").glob("*.glb"))
    for path in glbs:
        assert schema_errors(read_glb(path.read_bytes())[0], "glTF.schema.json") == []
    if gltf_validator_available():
        bad = [r for r in validate_glbs(glbs) if r["numErrors"] or r["numWarnings"]]
        assert not bad, bad[:2]


def test_rerun_is_byte_identical(tileset: Path, dtm: Path, tmp_path: Path) -> None:
    write_terrain_tiles(tmp_path / "again", sorted((dtm / "dtm").glob("*.tif")), cim.crs.resolve(KL_CRS), step=2,
                        workers=1)
    for path in sorted(tileset.parent.rglob("*.*")):
        assert (tmp_path / "again" / path.relative_to(tileset.parent)).read_bytes() == path.read_bytes(), path


def test_no_mosaic_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="t: no DTM tile rasters: run a raster.dtm stage before tiles.terrain"):
        write_terrain_tiles(tmp_path / "t", [], cim.crs.resolve(KL_CRS))
