"""Throughput of read -> tile -> write (cim run, 2 local workers) against raw laspy/lazrs decode of the same
files in the same run."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import laspy

from benchmarks.common import REPO, SHARED, run_measured, write_result


def _inputs() -> list[Path]:
    files = sorted((REPO / "data" / "delft").glob("*.laz"))
    if (SHARED / "bcts").is_dir():
        files += sorted((SHARED / "bcts").glob("*.laz"))
    return files


def main() -> None:
    files = _inputs()
    points = sum(laspy.open(f).header.point_count for f in files)
    start = time.perf_counter()
    for f in files:
        laspy.read(f)
    decode = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for group, crs in (("delft", "EPSG:7415"), ("bcts", None)):
            chosen = [f for f in files if group in str(f)]
            if not chosen:
                continue
            job = Path(tmp) / f"{group}.toml"
            crs_line = f'crs = "{crs}"' if crs else ""
            job.write_text(f'[job]\noutput = "{tmp}/{group}"\n{crs_line}\n[[stages]]\ntype = "read.las"\n'
                           f"files = {[str(f) for f in chosen]!r}\n[[stages]]\ntype = \"tile\"\n"
                           f'[[stages]]\ntype = "write.las"\n'.replace("'", '"'))
            run = run_measured([sys.executable, "-m", "cim.cli", "run", str(job), "--workers", "2"])
            run["pipeline_seconds"] = json.loads((Path(tmp) / group / "report.json").read_text())["seconds"]
            runs.append(run)
    seconds = sum(r["seconds"] for r in runs)
    pipeline = sum(r["pipeline_seconds"] for r in runs)
    write_result("io", {
        "files": [f.name for f in files],
        "points": points,
        "raw_decode_points_per_s": round(points / decode),
        "cim_read_tile_write_points_per_s": round(points / seconds),
        "ratio_to_raw_decode": round(decode / seconds, 3),
        "cim_pipeline_points_per_s": round(points / pipeline),
        "pipeline_ratio_to_raw_decode": round(decode / pipeline, 3),
        "cim_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "note": "cim end-to-end time includes interpreter and Dask cluster start-up; 'pipeline' is the wall time "
                "of the tasks (partitioning to per-tile files, LAZ compression of every tile, the STAC catalog) "
                "from report.json. Raw decode is laspy.read (lazrs) of the same files, one process.",
    })


if __name__ == "__main__":
    main()
