"""Ground heights from the job's DTM artefact (``raster.dtm`` -> ``buildings.*``): against the synthetic city's
true ground, against the DTM product itself, an explicit ``dtm`` file winning, and resume re-running the
buildings steps when the DTM changes (and only then)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from cim.buildings.footprints import Footprint
from cim.buildings.model import reconstruct
from cim.buildings.run import models_from_cityjson, summarise
from helpers import cim_cli
from cim.cityjson import read_cityjson
from cim.pipeline.execute import run_job, summarize
from cim.pipeline.job import parse_job


def _run(synth, out: Path, dtm: dict | None, buildings: dict | None = None, kind: str = "buildings.lod2"):
    stages = [{"type": "read.las", "files": [str(synth.als_laz)]}, {"type": "tile", "size": 100.0, "buffer": 30.0}]
    if dtm is not None:
        stages.append({"type": "raster.dtm", "folder": "terrain/dtm", **dtm})
    stages.append({"type": kind, "footprints": str(synth.footprints_gpkg), **(buildings or {})})
    result = run_job(parse_job({"job": {"name": "g", "output": str(out)}, "stages": stages}, out / "job.toml"),
                     scheduler="threads", workers=1)
    assert result.report.ok
    return result


def _models(out: Path) -> dict:
    return {m.id: m for f in sorted((out / "buildings").glob("*.city.jsonl")) for m in models_from_cityjson(f)}


def _truth(synth) -> dict[str, float]:
    return {t.id: t.attributes["cim_ground_height"] for t in read_cityjson(synth.buildings_cityjson)}


def _ring_ground(mosaic: Path, polygon, offset: float = 1.5, percentile: float = 10.0) -> float:
    """The 10th percentile of a DTM sampled (nearest cell) every 0.5 m on a ring 1.5 m outside the footprint."""
    ring = polygon.buffer(offset, join_style="mitre").exterior
    n = max(8, int(ring.length / 0.5))
    pts = [ring.interpolate(i / n, normalized=True).coords[0] for i in range(n)]
    with rasterio.open(mosaic) as ds:
        z = np.array([v[0] for v in ds.sample(pts)], dtype=float)
    return float(np.percentile(z, percentile))


def test_ground_from_the_jobs_dtm(synth_city, tmp_path):
    out = tmp_path / "job"
    first = _run(synth_city, out, {"resolution": 1.0})
    truth = _truth(synth_city)
    models = _models(out)
    assert sorted(models) == sorted(truth)
    err = [abs(m.attributes["h_ground"] - truth[k]) for k, m in models.items()]
    print(f"ground from the job's DTM: median error {np.median(err):.3f} m, max {np.max(err):.3f} m")
    assert all(m.attributes["ground_source"] == "dtm" for m in models.values())
    assert np.max(err) < 0.3
    mosaic = out / "terrain" / "dtm.vrt"  # the DTM product: the models' ground is its height around them
    gap = [abs(m.attributes["h_ground"] - _ring_ground(mosaic, m.footprint)) for m in models.values()]
    assert np.max(gap) < 0.05, np.max(gap)
    report = json.loads((out / "buildings" / "report.json").read_text())
    assert report["ground_source"] == {"dtm": len(truth)}
    assert not any(o.status == "failed" for o in first.report.outcomes.values())

    def statuses(result) -> set[str]:
        return {o.status for k, o in result.report.outcomes.items() if "buildings.lod2/" in k and "finish" not in k}

    assert statuses(_run(synth_city, out, {"resolution": 1.0})) == {"skipped"}  # same DTM: nothing re-runs
    coarse = _run(synth_city, out, {"resolution": 2.0})  # another DTM: every buildings step runs again
    assert statuses(coarse) == {"done"}
    regrounded = _models(out)
    assert any(regrounded[k].attributes["h_ground"] != models[k].attributes["h_ground"] for k in models)
    gap = [abs(m.attributes["h_ground"] - _ring_ground(mosaic, m.footprint)) for m in regrounded.values()]
    assert np.max(gap) < 0.05
    assert summarize(coarse)["ok"]


def test_explicit_dtm_file_wins(synth_city, tmp_path):
    """``cim buildings --dtm`` (here the true DTM raised by 10 m) wins over the DTM the command writes; a job
    without any DTM takes the ground from the ground points (LoD1.2 stage: the ground is found the same way)."""
    raised = tmp_path / "raised.tif"
    with rasterio.open(synth_city.dtm_tif) as src:
        profile, values = src.profile, src.read(1)
        nodata = src.nodata
    values = np.where(values == nodata, values, values + 10.0) if nodata is not None else values + 10.0
    with rasterio.open(raised, "w", **profile) as dst:
        dst.write(values, 1)
    truth = _truth(synth_city)
    out = tmp_path / "cli"
    done = cim_cli("buildings", str(synth_city.als_laz), "--footprints", str(synth_city.footprints_gpkg), "--dtm",
                   str(raised), "--lod1-only", "--no-tiles", "--tile-size", "100", "--buffer", "30", "--out",
                   str(out), "--scheduler", "threads", "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "dtm.vrt").is_file()  # the command's own DTM was written, and lost to the file
    models = _models(out)
    assert sorted(models) == sorted(truth)
    assert all(abs(m.attributes["h_ground"] - 10.0 - truth[k]) < 0.3 for k, m in models.items())
    assert {m.attributes["ground_source"] for m in models.values()} == {"dtm"}
    _run(synth_city, tmp_path / "points", None, None, "buildings.lod1")
    models = _models(tmp_path / "points")
    assert {m.attributes["ground_source"] for m in models.values()} == {"ground_points"}
    assert all(abs(m.attributes["h_ground"] - truth[k]) < 0.3 for k, m in models.items())
    report = json.loads((tmp_path / "points" / "buildings" / "report.json").read_text())
    assert report["ground_source"] == {"ground_points": len(truth)} and report["ground_estimated"] == []


def test_ground_source_names_come_from_the_model():
    """The model writes the canonical ``ground_source`` names itself: ground points around one footprint,
    a flagged estimate (with its reason) for one without any ground or DTM near it; the report counts both."""
    rng = np.random.default_rng(3)
    boxes = {"near": (0.0, 0.0, 10.0, 8.0), "far": (200.0, 0.0, 210.0, 8.0)}
    fps = [Footprint(k, shapely.box(*b)) for k, b in boxes.items()]
    roof = np.concatenate([np.column_stack([rng.uniform(b[0], b[2], 800), rng.uniform(b[1], b[3], 800),
                                            np.full(800, 106.0) + rng.normal(0, 0.02, 800)]) for b in boxes.values()])
    ring = shapely.box(*boxes["near"]).buffer(2.0).exterior  # ground points 2 m around "near" only, at 100 m
    ground = np.array([(*ring.interpolate(t, normalized=True).coords[0], 100.0) for t in np.linspace(0, 1, 200)])
    models = {m.id: m for m in reconstruct(fps, roof, ground)}
    near, far = models["near"].attributes, models["far"].attributes
    assert near["ground_source"] == "ground_points" and near["h_ground"] == 100.0 and "ground_flag" not in near
    assert far["ground_source"] == "estimated" and far["ground_flag"] is True
    assert far["ground_reason"] == "no ground points or DTM near the footprint"
    assert far["h_ground"] == pytest.approx(np.percentile(roof[800:, 2], 1) - 3.0, abs=1e-3)
    report = summarise(list(models.values()))
    assert report["ground_source"] == {"estimated": 1, "ground_points": 1} and report["ground_estimated"] == ["far"]
