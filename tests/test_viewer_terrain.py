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


def _write_dtm(out: Path, tiles_x: int, tiles_y: int, cells: int, hole: tuple[int, int] | None = None) -> Path:
    """COG tiles of ``_height`` (``cells`` x ``cells`` each) and their VRT under ``out``."""
    crs = cim.crs.resolve(KL_CRS)
    sources = []
    for i in range(tiles_x):
        for j in range(tiles_y):
            grid = GridSpec(410900.0 + i * cells * RES, 5479860.0 - j * cells * RES, cells, cells, RES)
            x = grid.xmin + (np.arange(cells) + 0.5) * RES
            y = grid.ymax - (np.arange(cells) + 0.5) * RES
            values = _height(*np.meshgrid(x, y)).astype(np.float32)
            if (i, j) == hole:
                values[10:20, 10:25] = np.nan  # a hole (no ground there)
            path = out / "dtm" / f"{i}_{j}.tif"
            write_cog(path, values, grid, crs)
            sources.append((path, grid))
    write_vrt(out / "dtm.vrt", sources, crs)
    return out


@pytest.fixture(scope="module")
def dtm(tmp_path_factory) -> Path:
    return _write_dtm(tmp_path_factory.mktemp("terrain"), 2, 2, CELLS, hole=(1, 1))


@pytest.fixture(scope="module")
def tileset(dtm: Path) -> Path:
    done = write_terrain_tiles(dtm / "terrain", sorted((dtm / "dtm").glob("*.tif")), cim.crs.resolve(KL_CRS),
                               step=2, workers=2)
    assert done["tiles"] == 4
    x0, y0, z0, x1, y1, z1 = done["bounds"]  # the tiles' area and the DTM's height range (for the STAC item)
    assert (x0, y0, x1, y1) == (410900.0, 5479800.0, 410960.0, 5479860.0)
    assert 230 < z0 < z1 < 260
    return dtm / "terrain" / "tileset.json"


def _contents(tileset: Path) -> dict[str, np.ndarray]:
    """ECEF positions of the vertices of every content (tile transforms x glTF node, glTF y-up undone), by uri."""
    out = {}

    def walk(tile: dict, parent: np.ndarray) -> None:
        world = parent @ np.asarray(tile.get("transform", np.eye(4).ravel()), float).reshape(4, 4).T
        if "content" in tile:
            gltf, binary = read_glb((tileset.parent / tile["content"]["uri"]).read_bytes())
            prim = gltf["meshes"][0]["primitives"][0]
            pos = accessor_array(gltf, binary, prim["attributes"]["POSITION"]).astype(np.float64)
            m = world @ np.linalg.inv(Y_UP_FROM_Z_UP) @ node_matrix(gltf)
            out[tile["content"]["uri"]] = pos @ m[:3, :3].T + m[:3, 3]
        for child in tile.get("children", []):
            walk(child, world)

    walk(json.loads(tileset.read_text())["root"], np.eye(4))
    return out


def _source_xyz(ecef: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    llh = ecef_to_geodetic(ecef)
    to4979 = cim.crs.to_geographic3d(cim.crs.resolve(KL_CRS))
    return to4979.transform(llh[:, 0], llh[:, 1], llh[:, 2], direction="INVERSE")


def _ecef_vertices(tileset: Path) -> tuple[np.ndarray, None]:
    """The full-detail tiles' vertices (ECEF)."""
    return np.concatenate([v for uri, v in _contents(tileset).items() if uri.startswith("tiles/")]), None


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
    assert report.tiles == 5 and report.skipped == 5  # five meshes (boxes checked, points not decoded)
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


def test_a_coarser_level_covers_the_tiles_on_every_second_sample(tileset: Path, dtm: Path) -> None:
    """2 x 2 tiles: the root holds one mesh of all four with a vertex every 4 cells (step 2 x 2), REPLACEd by the
    four full-detail tiles; its vertices are DTM cells too."""
    root = json.loads(tileset.read_text())["root"]
    assert root["content"]["uri"] == "levels/1/0_0.glb" and root["refine"] == "REPLACE"
    assert root["geometricError"] == 2 * 2 * RES and [c["geometricError"] for c in root["children"]] == [0.0] * 4
    x, y, z = _source_xyz(_contents(tileset)["levels/1/0_0.glb"])
    with rasterio.open(dtm / "dtm.vrt") as src:
        sampled = np.array([v[0] for v in src.sample(zip(x, y))], float)
    assert np.abs(z - sampled).max() < 2e-3
    cols = np.round((x - 410900.0) / RES - 0.5).astype(int)
    rows = np.round((5479860.0 - y) / RES - 0.5).astype(int)
    assert set(np.unique(cols)) == set(np.unique(rows)) == set(range(0, 2 * CELLS, 4))
    assert len(z) == 30 * 30 - 2 * 4  # the hole takes rows 12, 16 x cols 12, 16, 20, 24 of its tile's samples


def test_levels_up_to_one_root_with_shared_seams(tmp_path: Path) -> None:
    """4 x 1 tiles: two level-1 meshes (seam vertices shared) under one level-2 root."""
    _write_dtm(tmp_path, 4, 1, 8)
    write_terrain_tiles(tmp_path / "t", sorted((tmp_path / "dtm").glob("*.tif")), cim.crs.resolve(KL_CRS), step=1)
    tileset = tmp_path / "t" / "tileset.json"
    assert check_tileset(tileset).ok
    root = json.loads(tileset.read_text())["root"]
    assert root["content"]["uri"] == "levels/2/0_0.glb"
    assert [c["content"]["uri"] for c in root["children"]] == ["levels/1/0_0.glb", "levels/1/1_0.glb"]
    assert [len(c["children"]) for c in root["children"]] == [2, 2]
    contents = _contents(tileset)
    from scipy.spatial import cKDTree

    a, b = contents["levels/1/0_0.glb"], contents["levels/1/1_0.glb"]
    assert len(cKDTree(a).query_ball_point(b, 1e-3, return_length=True).nonzero()[0]) == 4  # the seam column
    for uri, ecef in contents.items():
        x, y, z = _source_xyz(ecef)
        assert np.abs(z - _height(x, y)).max() < 2e-3, uri


def test_tiles_off_one_grid_get_no_coarser_level(tmp_path: Path) -> None:
    crs = cim.crs.resolve(KL_CRS)
    for name, grid in (("a", GridSpec(410900.0, 5479860.0, 8, 8, RES)),
                       ("b", GridSpec(410904.0, 5479860.0, 6, 8, RES))):
        x = grid.xmin + (np.arange(grid.width) + 0.5) * RES
        y = grid.ymax - (np.arange(grid.height) + 0.5) * RES
        write_cog(tmp_path / "dtm" / f"{name}.tif", _height(*np.meshgrid(x, y)).astype(np.float32), grid, crs)
    write_terrain_tiles(tmp_path / "t", sorted((tmp_path / "dtm").glob("*.tif")), crs, step=1)
    root = json.loads((tmp_path / "t" / "tileset.json").read_text())["root"]
    assert "content" not in root and root["refine"] == "ADD"
    assert [c["content"]["uri"] for c in root["children"]] == ["tiles/a.glb", "tiles/b.glb"]
    assert not (tmp_path / "t" / "levels").exists() and check_tileset(tmp_path / "t" / "tileset.json").ok
    assert root["geometricError"] == 2.0  # half the larger tile's 4 m
