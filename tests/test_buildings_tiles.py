"""Buildings larger than the tile buffer get all of their points: a generated 190 m long gable building and a 150 m
long gable hall cut by 100 m tiles with a 20 m buffer are modelled as with one big tile (ground from the job's DTM
mosaic), each in a task of its own, and the job warns once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

import cim.io.las as las
from cim.buildings.run import models_from_cityjson
from cim.cityjson import BuildingGeometry
from cim.errors import CimWarning
from cim.pipeline.execute import run_job, summarize
from cim.pipeline.job import parse_job
from cim.synth.rooflib import ORIGIN, LibraryBuilding, ground_z
from cim.synth.roofs import GABLE, HIP, place, rectangle_solid, solid_volume
from cim.synth.scanstyles import ALS, CRS, scan
from helpers import cim_cli


def _building(bid: str, roof: int, length: float, width: float, eave: float, ridge: float, dx: float, dy: float,
              angle: float = 0.0) -> LibraryBuilding:
    x, y = ORIGIN[0] + dx, ORIGIN[1] + dy
    z = float(ground_z(x, y))
    faces, sem = rectangle_solid(length, width, eave, ridge, roof)
    solid = BuildingGeometry(bid, place(faces, angle, x, y, z), sem)
    outline = shapely.union_all([shapely.Polygon(f[:, :2]) for f, s in zip(solid.faces, sem) if s == "GroundSurface"])
    return LibraryBuilding(bid, shapely.set_precision(outline, 0.001).normalize(), roof, z, [solid], n_planes=2)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 190 m x 14 m gable hall crossing three 100 m tiles (its representative point in the middle one, 45 m
    past either edge of that tile), a 150 m x 12 m gable hall (25 m past its tile) and two ordinary houses, scanned
    in the ALS style; the footprints also hold a 160 m long "ghost" no point was scanned near (70 m past its
    tile)."""
    folder = tmp_path_factory.mktemp("long")
    buildings = [_building("hall", GABLE, 190.0, 14.0, 8.0, 13.0, 150.0, 50.0, angle=4.0),
                 _building("house-1", GABLE, 14.0, 9.0, 5.0, 9.0, 60.0, 80.0),
                 _building("house-2", HIP, 15.0, 10.0, 4.5, 8.0, 230.0, 20.0),
                 _building("hall-2", GABLE, 150.0, 12.0, 6.0, 10.0, 250.0, -30.0)]
    cloud = scan(buildings, ALS, seed=7)
    laz = las.write(folder / "long.laz", cloud, crs=cloud.crs)
    gpkg = folder / "footprints.gpkg"
    ghost = shapely.box(ORIGIN[0] + 110.0, ORIGIN[1] + 90.0, ORIGIN[0] + 270.0, ORIGIN[1] + 98.0)
    _footprints(gpkg, {**{b.id: b.footprint for b in buildings}, "ghost": ghost})
    return buildings, laz, gpkg


def _footprints(path: Path, polygons: dict[str, shapely.Polygon]) -> None:
    geometry = shapely.to_wkb(np.array(list(polygons.values()), dtype=object), output_dimension=2)
    ids = np.array(list(polygons), dtype=object)
    pyogrio.raw.write(path, geometry, [ids], ["id"], layer="fp", driver="GPKG", geometry_type="Polygon", crs=CRS)


def _run(laz: Path, gpkg: Path, out: Path, size: float, buffer: float, force: bool = False):
    doc = {"job": {"name": "t", "output": str(out)},
           "stages": [{"type": "read.las", "files": [str(laz)]}, {"type": "tile", "size": size, "buffer": buffer},
                      {"type": "raster.dtm", "resolution": 1.0},
                      {"type": "buildings.lod2", "footprints": str(gpkg)}, {"type": "write.cityjson"}]}
    # 2 workers: the large buildings are modelled in threads at once (block tasks)
    result = run_job(parse_job(doc, out / "job.toml"), scheduler="threads", workers=2, force=force)
    assert result.report.ok
    return result, {m.id: m for m in models_from_cityjson(out / "buildings.city.json")}


def test_large_building_gets_all_points(scene, tmp_path):
    buildings, laz, gpkg = scene
    with pytest.warns(CimWarning, match="buffer needed"):  # at planning, before any work
        tiled, small = _run(laz, gpkg, tmp_path / "tiled", 100.0, 20.0)
    one, big = _run(laz, gpkg, tmp_path / "big", 1000.0, 20.0)
    assert sorted(small) == sorted(big) == sorted([b.id for b in buildings] + ["ghost"])
    assert small.pop("ghost").attributes["status"] == big.pop("ghost").attributes["status"] == "no_points"
    hall, truth = small["hall"], buildings[0]
    cloud = las.read(laz)
    inside = shapely.contains_xy(truth.footprint, cloud.x, cloud.y) & (cloud.classification == 6)
    assert hall.attributes["point_count"] == big["hall"].attributes["point_count"] == int(inside.sum())
    assert {m.attributes["ground_source"] for m in (*small.values(), *big.values())} == {"dtm"}
    for bid, m in small.items():
        other = big[bid]
        assert m.attributes["status"] == other.attributes["status"] == "lod22"
        for name in ("roof_type", "n_planes"):
            assert m.attributes[name] == other.attributes[name], (bid, name)
        for name in ("h_ground", "h_lod12", "h_eaves", "h_ridge", "h_roof_max"):
            assert abs(m.attributes[name] - other.attributes[name]) < 0.02, (bid, name)
        assert solid_volume(m.lod22.faces) == pytest.approx(solid_volume(other.lod22.faces), rel=0.005)
    # the truth stands on its centre's ground; the model on the ground around it (the terrain drops 1.9 m along it)
    true_volume = solid_volume(truth.solids[0].faces)
    true_volume += (truth.ground - hall.attributes["h_ground"]) * truth.footprint.area
    print(f"190 m hall: {hall.attributes['point_count']} points, {hall.attributes['n_planes']} planes, volume "
          f"{solid_volume(hall.lod22.faces):.0f} m3 (truth {true_volume:.0f}), ridge {hall.attributes['h_ridge']:.2f}")
    assert solid_volume(hall.lod22.faces) == pytest.approx(true_volume, rel=0.01)
    assert hall.attributes["roof_type"] == GABLE
    warnings = [w for w in summarize(tiled)["warnings"] if "tile buffer" in w]
    # the largest footprint is the hall; the ghost reaches furthest beyond its tile (x in [100, 200) m): 70 m
    assert len(warnings) == 1 and "largest: hall, 190.0 x 14.0 m" in warnings[0]
    assert "buffer needed: 70 m" in warnings[0]
    report = json.loads((tmp_path / "tiled" / "buildings" / "report.json").read_text())
    assert report["buffer_exceeded"]["footprints"] == ["ghost", "hall", "hall-2"]
    assert report["buildings"] == 5 and report["lod22"] == 4
    assert not any("tile buffer" in w for w in summarize(one)["warnings"])
    # each large building in a task of its own after the tiles, modelled there once; the finish models none
    timeline = summarize(tiled)["timeline"]["tasks"]
    blocks = [t for t in timeline if t["stage"] == "buildings.lod2" and "/block/" in t["task"]]
    assert sorted(t["task"].rsplit("/", 1)[1] for t in blocks) == ["ghost", "hall", "hall-2"]
    records = [r for t in blocks for r in tiled.report.outcomes[t["task"]].result["record"]["large"]]
    assert sorted(r["id"] for r in records) == ["ghost", "hall", "hall-2"] and all(r["modelled"] for r in records)
    finish = next(t for t in timeline if t["task"].endswith("buildings.lod2/finish"))
    assert all(t["end"] <= finish["start"] for t in blocks) and all(t["task"] in finish["deps"] for t in blocks)


@pytest.mark.filterwarnings("ignore:.*reach beyond the tile buffer:cim.errors.CimWarning")
def test_large_building_resumes_and_is_deterministic(scene, tmp_path):
    """The buildings modelled after the tiles are kept by a resume; a forced re-run models every one of them again
    (their inputs are unchanged: their cached models are not reused) and writes the same bytes."""
    _, laz, gpkg = scene
    out = tmp_path / "tiled"
    _run(laz, gpkg, out, 100.0, 20.0)
    large = out / "buildings" / "large.city.jsonl"
    files = {p: p.read_bytes() for p in (large, out / "buildings.city.json")}
    assert len(models_from_cityjson(large)) == 3  # the halls and the ghost
    again, _ = _run(laz, gpkg, out, 100.0, 20.0)
    assert {o.status for k, o in again.report.outcomes.items() if "buildings.lod2" in k} == {"skipped"}
    forced, _ = _run(laz, gpkg, out, 100.0, 20.0, force=True)
    stage = {k: o for k, o in forced.report.outcomes.items() if "buildings.lod2" in k}
    assert {o.status for o in stage.values()} == {"done"}
    modelled = {k.rsplit("/", 1)[1]: [r["modelled"] for r in o.result["record"]["large"]]
                for k, o in stage.items() if "/block/" in k}
    assert modelled == {"ghost": [True], "hall": [True], "hall-2": [True]}
    assert all(p.read_bytes() == data for p, data in files.items())
    resumed, _ = _run(laz, gpkg, out, 100.0, 20.0)  # the forced run's records serve a resume
    assert {o.status for k, o in resumed.report.outcomes.items() if "buildings.lod2" in k} == {"skipped"}


@pytest.mark.filterwarnings("ignore:.*reach beyond the tile buffer:cim.errors.CimWarning")
def test_unchanged_large_building_is_not_modelled_again(scene, tmp_path):
    """A new footprint far from the halls re-runs the buildings stage, but not the halls' models."""
    buildings, laz, gpkg = scene
    out = tmp_path / "tiled"
    _run(laz, gpkg, out, 100.0, 20.0)
    before = (out / "buildings" / "large.city.jsonl").read_bytes()
    changed = tmp_path / "footprints.gpkg"
    shed = shapely.box(ORIGIN[0] + 20.0, ORIGIN[1] + 2.0, ORIGIN[0] + 26.0, ORIGIN[1] + 7.0)
    ghost = shapely.box(ORIGIN[0] + 110.0, ORIGIN[1] + 90.0, ORIGIN[0] + 270.0, ORIGIN[1] + 98.0)
    _footprints(changed, {**{b.id: b.footprint for b in buildings}, "ghost": ghost, "shed": shed})
    again, models = _run(laz, changed, out, 100.0, 20.0)
    blocks = {k.rsplit("/", 1)[1]: o for k, o in again.report.outcomes.items() if "buildings.lod2/block/" in k}
    assert {o.status for o in blocks.values()} == {"done"}  # the step fingerprints changed (the file did) ...
    modelled = {k: [r["modelled"] for r in o.result["record"]["large"]] for k, o in blocks.items()}
    assert modelled == {"ghost": [False], "hall": [False], "hall-2": [False]}  # ... not the inputs
    assert (out / "buildings" / "large.city.jsonl").read_bytes() == before
    assert models["shed"].attributes["status"] == "no_points" and models["hall"].attributes["status"] == "lod22"


def test_derived_outlines_larger_than_the_buffer(scene, tmp_path):
    """Without footprints, the outlines of the two halls leave their tiles' buffered squares: found by the tiles,
    their points gathered from every tile they touch and modelled once after the tiles, as with one big tile."""
    buildings, laz, _ = scene

    def run(out: Path, size: float):
        doc = {"job": {"name": "d", "output": str(out)},
               "stages": [{"type": "read.las", "files": [str(laz)]}, {"type": "tile", "size": size, "buffer": 20.0},
                          {"type": "buildings.lod2"}, {"type": "write.cityjson"}]}
        result = run_job(parse_job(doc, out / "job.toml"), scheduler="threads", workers=2)
        assert result.report.ok
        return result, {m.id: m for m in models_from_cityjson(out / "buildings.city.json")}

    tiled, small = run(tmp_path / "tiled", 100.0)
    big_run, big = run(tmp_path / "big", 1000.0)
    assert [w for w in summarize(tiled)["warnings"] if "tile buffer" in w][0].startswith("2 derived outline(s) reach")
    assert not any("tile buffer" in w for w in summarize(big_run)["warnings"])
    assert sorted(small) == sorted(big) and len(small) == 4  # the ghost has no points: no outline
    for truth in buildings:
        [(bid, m)] = [(k, m) for k, m in small.items() if _iou(m.footprint, truth.footprint) > 0.9]
        other = big[bid]
        assert m.attributes["point_count"] == other.attributes["point_count"], truth.id
        assert m.attributes["status"] == other.attributes["status"] == "lod22"
        assert m.attributes["roof_type"] == other.attributes["roof_type"] == truth.roof_type
        for name in ("h_lod12", "h_eaves", "h_ridge", "h_roof_max"):
            assert abs(m.attributes[name] - other.attributes[name]) < 0.02, (truth.id, name)
    report = json.loads((tmp_path / "tiled" / "buildings" / "report.json").read_text())
    halls = sorted(k for k, m in small.items() if m.footprint.area > 1000)
    assert report["buffer_exceeded"]["derived"] == halls and report["buildings"] == 4
    assert len(models_from_cityjson(tmp_path / "tiled" / "buildings" / "large.city.jsonl")) == 2
    records = [o.result["record"] for k, o in tiled.report.outcomes.items() if "buildings.lod2/block/" in k]
    assert sorted(r["id"] for rec in records for r in rec["large"]) == halls  # each modelled once, in a block


def _iou(a: shapely.Polygon, b: shapely.Polygon) -> float:
    return a.intersection(b).area / a.union(b).area


def test_191_m_building_with_the_default_buffer(tmp_path):
    """The issue's 191 m building under ``cim buildings`` defaults (250 m tiles, 40 m buffer), across a tile edge:
    the warning names the buffer it needs and says it is modelled whole, and it is (every point of it)."""
    hall = _building("hall", GABLE, 191.0, 14.0, 7.0, 12.0, -20.0, 30.0)  # x from -115.5 to 75.5 m: 75.5 m past
    cloud = scan([hall], ALS, seed=11)
    laz = las.write(tmp_path / "hall.laz", cloud, crs=cloud.crs)
    gpkg = tmp_path / "hall.gpkg"
    _footprints(gpkg, {"hall": hall.footprint})
    out = tmp_path / "out"
    done = cim_cli("buildings", str(laz), "--footprints", str(gpkg), "--no-tiles", "--out", str(out),
                   "--scheduler", "threads", "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "tile buffer of 40 m (largest: hall, 191.0 x 14.0 m; buffer needed: 76 m)" in said
    assert "modelled whole after the tiles" in said
    [model] = models_from_cityjson(out / "buildings" / "large.city.jsonl")
    cloud = las.read(laz)
    inside = shapely.contains_xy(hall.footprint, cloud.x, cloud.y) & (cloud.classification == 6)
    assert model.attributes["status"] == "lod22" and model.attributes["point_count"] == int(inside.sum())
    assert model.attributes["roof_type"] == GABLE
