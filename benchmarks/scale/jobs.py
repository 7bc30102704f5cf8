"""The measured jobs: cim job files (tiles, terrain, buildings), their command lines, and py3dtiles'.

Every cim job runs through ``cim run`` with local worker processes (``--workers W``), so the same command
measures whatever runner the checked-out code has. "1 worker" runs with one thread everywhere: laspy's
default LAZ backend (lazrs) and BLAS/OpenMP would otherwise use every core.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: environment of a "1 worker" run: one process, one thread
ONE_THREAD = {name: "1" for name in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}

#: the stages after ``read.las`` of every job, and its tiling (edge, buffer in metres)
JOBS: dict[str, dict[str, Any]] = {
    "tiles": {"tile": (250.0, 0.0), "stages": [{"type": "tiles.pointcloud"}]},
    "terrain": {"tile": (100.0, 20.0), "stages": [
        {"type": "filter.outliers"}, {"type": "classify.ground", "mode": "always"}, {"type": "classify.objects"},
        {"type": "raster.dtm", "resolution": 0.5}, {"type": "raster.dsm", "resolution": 0.5}]},
    "buildings": {"tile": (100.0, 30.0), "stages": [
        {"type": "buildings.lod2", "footprints": "{footprints}"}, {"type": "write.cityjson"}]},
}

#: what a finished job must have written (relative to its output folder)
PRODUCTS = {"tiles": "3dtiles/pointcloud/tileset.json", "terrain": "dtm.vrt", "buildings": "buildings.city.json"}


def job_toml(job: str, files: list[Path], footprints: Path, tile: float | None = None) -> str:
    """The job file of ``job`` over ``files`` (``tile`` overrides the job's tile edge)."""
    spec = JOBS[job]
    size, buffer = spec["tile"]
    stages = [{"type": "read.las", "files": [str(f) for f in files]},
              {"type": "tile", "size": tile or size, "buffer": buffer}]
    stages += [{k: (v.format(footprints=footprints) if isinstance(v, str) else v) for k, v in s.items()}
               for s in spec["stages"]]
    lines = ["[job]", f'name = "scale-{job}"', 'output = "out"', 'crs = "EPSG:25832+7837"']
    for stage in stages:
        lines += ["", "[[stages]]", *(f"{k} = {json.dumps(v)}" for k, v in stage.items())]
    return "\n".join(lines) + "\n"


def cim_command(job_file: Path, out: Path, workers: int) -> list[str]:
    """``cim run`` of ``job_file`` into ``out`` on ``workers`` local worker processes (this interpreter)."""
    return [sys.executable, "-m", "cim.cli", "run", str(job_file), "--out", str(out), "--workers", str(workers)]


def py3dtiles_command(files: list[Path], out: Path, workers: int) -> list[str]:
    """py3dtiles on the same files (heights taken as they are: it has no vertical datum handling)."""
    return [str(Path(sys.executable).parent / "py3dtiles"), "convert", *map(str, files), "--out", str(out),
            "--overwrite", "--srs_in", "25832", "--force-srs-in", "--srs_out", "4978", "--jobs", str(workers),
            "--spec-version", "1.1"]


def job_outcome(job: str, out: Path) -> dict[str, Any]:
    """Facts of a finished cim job from its ``report.json``: points, tiles, seconds per stage, products."""
    report = json.loads((out / "report.json").read_text())
    facts: dict[str, Any] = {"points": report["points"], "tiles": report["tiles"],
                             "stage_seconds": {s["stage"]: round(s["seconds"], 3) for s in report["stages"]},
                             "product": (out / PRODUCTS[job]).exists()}
    summary = out / "buildings" / "report.json"
    if job == "buildings" and summary.exists():
        facts["buildings"] = json.loads(summary.read_text()).get("buildings")
    return facts
