"""Footprint files that would silently give no buildings: refused before work (exit 2) with the likely cause, and
degenerate single footprints skipped with their id in the summary and the report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely

from tests.hostile.conftest import assert_no_products, assert_refused, job_text

ORIGIN = (85_000.0, 446_000.0)  # where conftest.write_points puts the points (EPSG:7415, RD New + NAP)


def write_footprints(path: Path, wkts: list[str], crs: str | None = "EPSG:28992", layer: str = "pand") -> Path:
    """A layer of polygons with an ``identificatie`` field (GeoPackage, or a shapefile for ``.shp``)."""
    from pyogrio.raw import write

    geoms = np.array([shapely.to_wkb(shapely.from_wkt(w)) for w in wkts], dtype=object)
    ids = np.array([f"fp{i}" for i in range(len(wkts))], dtype=object)
    with warnings.catch_warnings():  # pyogrio warns of a missing CRS and a shapefile's 10-character field names
        warnings.simplefilter("ignore")
        write(path, geoms, [ids], ["identificatie"], layer=layer,
              driver="ESRI Shapefile" if path.suffix == ".shp" else "GPKG", geometry_type="Polygon", crs=crs)
    return path


def square(x: float, y: float, half: float) -> str:
    return f"POLYGON(({x - half} {y - half}, {x + half} {y - half}, {x + half} {y + half}, {x - half} {y + half}, " \
           f"{x - half} {y - half}))"


BUILDING = square(ORIGIN[0] + 30, ORIGIN[1] + 30, 8)  # the box building of conftest.write_points


def _job(tmp: Path, points: Path, footprints: Path, options: str = "") -> tuple[Path, Path]:
    out = tmp / "out"
    stage = f'[[stages]]\ntype = "buildings.lod1"\nfootprints = "{footprints.as_posix()}"\n{options}\n'
    job = tmp / "job.toml"
    job.write_text(job_text(out, points, size=100.0, extra=stage, job_extra='crs = "EPSG:7415"'))
    return job, out


def _bad_footprints(case: str, folder: Path) -> tuple[Path, str, list[str]]:
    """(file, extra stage options, what the message must say) for each bad footprint file."""
    path = folder / "fp.gpkg"
    if case == "empty-layer":
        return write_footprints(path, []), "", ["has no footprints"]
    if case == "garbage-gpkg":
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
        return path, "", ["not a readable vector file"]
    if case == "missing-layer":
        return write_footprints(path, [BUILDING]), 'footprints_layer = "gebouwen"', ["'gebouwen'", "pand"]
    if case == "degrees-declared-rd":
        lonlat = square(4.36, 52.01, 0.0001)
        return write_footprints(path, [lonlat]), "", ["look like EPSG:4326 degrees", "Amersfoort"]
    if case == "elsewhere":
        return write_footprints(path, [square(ORIGIN[0] + 20_000, ORIGIN[1], 8)]), "", ["do not meet the points"]
    if case == "no-crs":  # a shapefile without its .prj
        return write_footprints(folder / "fp.shp", [BUILDING], crs=None), "", ["declares no CRS", "footprints_crs"]
    if case == "text-file":
        path = folder / "fp.geojson"
        path.write_text("{ this is not json")
        return path, "", ["not a readable vector file"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty-layer", "garbage-gpkg", "missing-layer", "degrees-declared-rd",
                                  "elsewhere", "text-file", "no-crs"])
def test_bad_footprints_refused_before_work(case: str, points: Path, data_dir: Path, tmp_path: Path,
                                            sandbox) -> None:
    footprints, options, says = _bad_footprints(case, data_dir)
    job, out = _job(tmp_path, points, footprints, options)
    assert_refused(sandbox("run", str(job), "--scheduler", "threads", out=out), footprints.name, *says)
    assert_no_products(out)
    assert not (out / ".cim" / "parts").exists()


def test_degenerate_footprint_is_skipped_with_its_id(points: Path, data_dir: Path, tmp_path: Path, sandbox) -> None:
    """A footprint collapsed to a point (fp1) and one to a line (fp2) beside a good one: the good building is
    modelled, the two ids are in the terminal summary and in report.json."""
    x, y = ORIGIN[0] + 10, ORIGIN[1] + 10
    point = f"POLYGON(({x} {y}, {x} {y}, {x} {y}, {x} {y}))"
    line = f"POLYGON(({x} {y}, {x + 5} {y + 5}, {x + 10} {y + 10}, {x} {y}))"
    footprints = write_footprints(data_dir / "fp.gpkg", [BUILDING, point, line])
    job, out = _job(tmp_path, points, footprints)
    result = sandbox("run", str(job), "--scheduler", "threads", out=out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr and not result.strays
    summary = " ".join(result.stdout.split())
    assert "degenerate" in summary and "fp1, fp2" in summary
    report = json.loads((out / "report.json").read_text())
    assert any("fp1, fp2" in w and "degenerate" in w for w in report["warnings"])
    cityjson = [json.loads(line) for f in (out / "buildings").glob("*.city.jsonl")
                for line in f.read_text().splitlines()]
    ids = {k for doc in cityjson[1:] for k in doc.get("CityObjects", {})}
    assert any("fp0" in i for i in ids) and not any("fp1" in i or "fp2" in i for i in ids), ids
