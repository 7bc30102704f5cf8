"""tiles.pointcloud end to end on a synthetic Kaiserslautern cloud (EPSG:25832+7837, 3 x 3 tiles of 100 m)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cim
from cim.io import las
from cim.tiles3d.check import check_tileset
from cim.tiles3d.glb import decode_points, read_glb, srgb_to_linear
from cim.tiles3d.implicit import read_subtree
from cim.tiles3d.placement import LocalFrame, ecef_to_geodetic
from test_tiles_helpers import (
    CONTROL,
    CONTROL_ELLIPSOIDAL,
    KL_CRS,
    require_gltf_validator,
    schema_errors,
    synthetic_cloud,
    validate_glbs,
)

N = 120_000


@pytest.fixture(scope="module")
def cloud():
    return synthetic_cloud(N)


def _document(src: Path, out: Path, implicit: bool, meshopt: bool = False) -> dict:
    return {
        "job": {"name": "kl", "output": str(out)},
        "stages": [
            {"type": "read.las", "files": [str(src)]},
            {"type": "tile", "size": 100.0, "buffer": 5.0},
            {"type": "tiles.pointcloud", "leaf_points": 4000, "extra": ["point_id"], "name": "KL test",
             "implicit": implicit, "meshopt": meshopt},
        ],
    }


@pytest.fixture(scope="module", params=["explicit", "implicit+meshopt"])
def tileset(request, tmp_path_factory, cloud) -> Path:
    """Run the real pipeline (read.las -> tile -> tiles.pointcloud) on Dask threads.

    The second layout is implicit tiling with EXT_meshopt_compression contents, so every check below (glTF
    validator, round trip, attributes, point ids) also runs on compressed contents."""
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    meshopt = "meshopt" in request.param
    if meshopt:
        pytest.importorskip("meshoptimizer")

    root = tmp_path_factory.mktemp("tiles")
    src = root / "kl.laz"
    las.write(src, cloud)
    out = root / "out"
    document = _document(src, out, "implicit" in request.param, meshopt)
    run = run_job(parse_job(document, root / "job.toml"), scheduler="threads", workers=2)
    assert run.report.ok, [o.error for o in run.report.outcomes.values() if o.error]
    return out / "3dtiles" / "pointcloud" / "tileset.json"


def _all_tilesets(tileset: Path) -> list[Path]:
    return [tileset, *sorted((tileset.parent / "tiles").glob("*/tileset.json"))]


def test_tilesets_validate_against_official_schema(tileset):
    for path in _all_tilesets(tileset):
        doc = json.loads(path.read_text())
        assert schema_errors(doc, "tileset.schema.json") == [], path
        assert doc["asset"]["version"] == "1.1"
        assert doc["root"]["refine"] == "ADD"
    for path in sorted((tileset.parent / "tiles").rglob("*.subtree")):
        subtree, binary = read_subtree(path.read_bytes())
        assert schema_errors(subtree, "Subtree/subtree.schema.json") == [], path
        assert len(binary) == sum(b["byteLength"] for b in subtree.get("buffers", []))


def test_glb_metadata_extensions_validate_against_schema(tileset):
    for glb in sorted(tileset.parent.rglob("*.glb"))[:20]:
        gltf, _ = read_glb(glb.read_bytes())
        assert schema_errors(gltf, "glTF.schema.json") == []
        assert schema_errors(gltf["extensions"]["EXT_structural_metadata"],
                             "glTF.EXT_structural_metadata.schema.json") == []
        prim = gltf["meshes"][0]["primitives"][0]
        assert schema_errors(prim["extensions"]["EXT_structural_metadata"],
                             "mesh.primitive.EXT_structural_metadata.schema.json") == []
        assert "KHR_mesh_quantization" in gltf["extensionsRequired"]
        assert gltf["accessors"][prim["attributes"]["POSITION"]]["componentType"] == 5123


def test_every_glb_passes_khronos_validator(tileset):
    require_gltf_validator()
    glbs = sorted(tileset.parent.rglob("*.glb"))
    reports = validate_glbs(glbs)
    bad = [r for r in reports if r["numErrors"] or r["numWarnings"]]
    assert not bad, bad[:3]


def test_hierarchy_invariants_and_no_point_lost_or_duplicated(tileset, cloud):
    report = check_tileset(tileset, keep_values=True)
    assert report.ok, report.problems[:10]
    assert report.points == N
    ids = np.concatenate(report.values["point_id"]).astype(np.int64)
    assert np.array_equal(np.sort(ids), np.arange(N))  # each point exactly once
    assert report.sums["intensity"] == float(cloud["intensity"].astype(np.int64).sum())
    assert report.sums["classification"] == float(cloud["classification"].astype(np.int64).sum())
    # several levels: the tree is not a flat list of tiles
    assert report.tiles > 9 + 3


def test_geometric_errors_and_root(tileset):
    doc = json.loads(tileset.read_text())
    root = doc["root"]
    half = np.asarray(root["boundingVolume"]["box"][3:]).reshape(3, 3)
    diagonal = 2 * np.linalg.norm(half.sum(axis=0))
    assert doc["geometricError"] >= diagonal * 0.99  # never culled for being too detailed at the top
    assert root["geometricError"] > 0
    assert len(root["transform"]) == 16


def test_attributes_round_trip(tileset, cloud):
    """GPS time (float64 through offset + float32), colours (8-bit detection, sRGB -> linear)."""
    report = check_tileset(tileset, keep_values=True)
    ids = np.concatenate(report.values["point_id"]).astype(np.int64)
    gps = np.concatenate(report.values["gps_time"])
    assert np.max(np.abs(gps - cloud["gps_time"][ids])) < 1e-4  # 600 s range: float32 step 6e-5 s
    glb = next(iter(sorted((tileset.parent / "tiles").glob("*/1-*.glb"))))
    local, attrs, gltf = decode_points(glb.read_bytes())
    meta = gltf["extensions"]["EXT_structural_metadata"]["propertyAttributes"][0]["properties"]
    pid = attrs[meta["point_id"]["attribute"]][:, 0].astype(np.float64) + meta["point_id"].get("offset", 0)
    pid = pid.astype(np.int64)
    rgb = np.column_stack([cloud["red"], cloud["green"], cloud["blue"]])[pid] / 255.0
    stored = attrs["COLOR_0"][:, :3] / 65535.0
    assert np.max(np.abs(stored - srgb_to_linear(rgb))) < 1e-4


def test_round_trip_ecef_to_source_crs_within_quantization(tileset, cloud):
    report = check_tileset(tileset, keep_values=True, keep_ecef=True)
    ids = np.concatenate(report.values["point_id"]).astype(np.int64)
    ecef = np.concatenate(report.ecef)
    llh = ecef_to_geodetic(ecef)
    to4979 = cim.crs.to_geographic3d(cim.crs.resolve(KL_CRS))
    x, y, z = to4979.transform(llh[:, 0], llh[:, 1], llh[:, 2], direction="INVERSE")
    err = np.abs(np.column_stack([x, y, z]) - cloud.xyz[ids])
    # 16-bit quantization of node boxes: the largest node (the upper levels, < 260 m) has steps < 4 mm
    assert err.max() < 0.004
    assert np.median(err) < 0.001
    control = int(np.flatnonzero(ids == 0)[0])
    assert abs(llh[control, 2] - CONTROL_ELLIPSOIDAL) < 0.004


def test_control_point_height_exact():
    frame = LocalFrame.from_crs(KL_CRS, (410900.0, 5479800.0, 240.0))
    local = frame.to_local_exact(*[np.array([v]) for v in CONTROL])
    ecef = local @ frame.ecef_from_local[:3, :3].T + frame.ecef_from_local[:3, 3]
    lon, lat, h = ecef_to_geodetic(ecef)[0]
    assert abs(h - CONTROL_ELLIPSOIDAL) < 5e-4
    back = frame.from_local(local)[0]
    assert np.allclose(back, CONTROL, atol=1e-6)


def test_tileset_metadata_and_statistics(tileset, cloud):
    catalog_items = sorted((tileset.parents[2] / "stac").glob("*/*.json"))
    item = json.loads(next(p for p in catalog_items if "pointcloud" in p.name).read_text())
    assert item["properties"]["cim:kind"] == "3dtiles"
    w, s, e, n = item["bbox"]
    assert 7.76 < w < e < 7.78 and 49.45 < s < n < 49.47  # the synthetic cloud's footprint, in WGS 84
    doc = json.loads(tileset.read_text())
    props = doc["metadata"]["properties"]
    assert props["pointCount"] == N
    assert props["sourceCrs"].startswith("EPSG:25832+7837")
    assert abs(props["originLatitude"] - 49.46) < 0.01 and abs(props["originLongitude"] - 7.77) < 0.01
    stats = doc["statistics"]["classes"]["point"]
    assert stats["count"] == N
    assert stats["properties"]["intensity"]["max"] == float(cloud["intensity"].max())
    assert stats["properties"]["classification"]["min"] == 2.0
    assert set(doc["schema"]["classes"]["point"]["properties"]) >= {"intensity", "classification", "gps_time",
                                                                    "return_number", "point_id"}


def test_rerun_skips_finished_tasks_and_is_deterministic(tileset, tmp_path):
    before = {p: p.read_bytes() for p in tileset.parent.rglob("*") if p.is_file()}
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    out = tileset.parent.parent.parent
    src = out.parent / "kl.laz"
    implicit = any((tileset.parent / "tiles").rglob("*.subtree"))
    meshopt = b"EXT_meshopt_compression" in next((tileset.parent / "tiles").rglob("*.glb")).read_bytes()
    document = _document(src, out, implicit, meshopt)
    run = run_job(parse_job(document, out.parent / "job.toml"), scheduler="threads", workers=2, force=True)
    assert run.report.ok
    after = {p: p.read_bytes() for p in tileset.parent.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[p] == before[p] for p in before)


def test_a_deleted_or_altered_tile_glb_is_remade_on_resume(cloud, tmp_path):
    """The per-tile glbs are outputs of their tile's step: a resume re-runs the steps whose glb is missing or
    changed and gives the same bytes back (the other tiles' steps run again too: the finish that must follow needs
    their root candidates, which the first run's finish cleared with the stage's scratch)."""
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    src = tmp_path / "kl.laz"
    las.write(src, cloud)
    out = tmp_path / "out"
    document = _document(src, out, implicit=False)
    assert run_job(parse_job(document, tmp_path / "job.toml"), scheduler="threads", workers=2).report.ok
    glbs = sorted((out / "3dtiles" / "pointcloud" / "tiles").rglob("*.glb"))
    gone, altered = glbs[0], glbs[-1]
    assert gone.parent != altered.parent  # two tiles
    kept = {gone: gone.read_bytes(), altered: altered.read_bytes()}
    gone.unlink()
    altered.write_bytes(bytes(len(kept[altered])))  # same size, other content
    run = run_job(parse_job(document, tmp_path / "job.toml"), scheduler="threads", workers=2)
    assert run.report.ok
    done = {k for k, o in run.report.outcomes.items() if o.stage == "tiles.pointcloud" and o.status == "done"
            and "/" in k and not k.endswith(("finish", "summary")) and "/block/" not in k}
    assert {gone.parent.name, altered.parent.name} <= {k.rsplit("/", 1)[1] for k in done}
    assert gone.read_bytes() == kept[gone] and altered.read_bytes() == kept[altered]
    again = run_job(parse_job(document, tmp_path / "job.toml"), scheduler="threads", workers=2)
    assert not [k for k, o in again.report.outcomes.items() if o.status == "done"]  # intact: nothing re-runs
