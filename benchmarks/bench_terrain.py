"""Terrain benchmark: points/s of outliers, ground (SMRF), DTM/DSM/density against the raw LAZ decode rate of the
same files in the same run and against the CSF package on the same data; peak memory; ISPRS accuracy table.

    .venv/bin/python benchmarks/bench_terrain.py [--quick] [--out benchmarks/results/terrain.json]

CPU seconds (``time.process_time``) are reported beside wall seconds: on a shared machine the wall clock measures
the neighbours' load as much as this code. The 2-core figure runs the ground + DTM of independent tiles in two
worker processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cim.io import las  # noqa: E402
from cim.points import PointCloud  # noqa: E402
from cim.terrain import GridSpec, classify_ground, density_grid, dsm_grid, dtm_grid  # noqa: E402
from cim.terrain.ground import SmrfParams, ground_mask  # noqa: E402
from cim.terrain.metrics import ISPRS_SAMPLES, filter_errors  # noqa: E402
from cim.terrain.outliers import isolated_points, low_noise  # noqa: E402

SHARED = Path(os.environ.get("CIM_SHARED_DATA", REPO.parent / "shared" / "data"))


def timed(fn, *args, **kwargs):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w, time.process_time() - c


def rate(n: int, seconds: float) -> float:
    return round(n / seconds) if seconds > 0 else float("inf")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dataset(name: str, files: list[Path], crs: str | None, resolution: float, csf: bool) -> dict:
    clouds, wall, cpu = [], 0.0, 0.0
    for f in files:
        pc, w, c = timed(las.read, f, crs=crs)
        clouds.append(pc)
        wall, cpu = wall + w, cpu + c
    pc = PointCloud.concat(clouds) if len(clouds) > 1 else clouds[0]
    n = len(pc)
    res: dict = {"files": [str(f.relative_to(f.parents[2])) for f in files], "points": n,
                 "decode": {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "pts_per_cpu_s": rate(n, cpu)}}
    x, y, z = pc.x, pc.y, pc.z
    (_, w1, c1) = timed(low_noise, x, y, z)
    (_, w2, c2) = timed(isolated_points, pc.xyz, radius=5.0, min_neighbors=1)
    res["outliers"] = {"wall_s": round(w1 + w2, 3), "cpu_s": round(c1 + c2, 3), "pts_per_cpu_s": rate(n, c1 + c2)}
    ground, wg, cg = timed(classify_ground, pc)
    _, _, c0 = timed(classify_ground, pc, refine=0)  # plain SMRF: what the refine passes cost
    res["ground_smrf"] = {"wall_s": round(wg, 3), "cpu_s": round(cg, 3), "pts_per_cpu_s": rate(n, cg),
                          "ground_share": round(float(ground.mean()), 4),
                          "cpu_ratio_to_refine_0": round(cg / c0, 2) if c0 > 0 else None}
    grid = GridSpec.from_points(x, y, resolution)
    _, wd, cd = timed(dtm_grid, pc, grid, ground=ground)
    _, ws, cs = timed(dsm_grid, pc, grid)
    _, wn, cn = timed(density_grid, pc, grid)
    res["dtm"] = {"wall_s": round(wd, 3), "cpu_s": round(cd, 3), "cells": grid.width * grid.height,
                  "resolution": resolution}
    res["dsm"] = {"wall_s": round(ws, 3), "cpu_s": round(cs, 3)}
    res["density"] = {"wall_s": round(wn, 3), "cpu_s": round(cn, 3)}
    res["ground_plus_dtm_pts_per_cpu_s"] = rate(n, cg + cd)
    total_cpu = c1 + c2 + cg + cd + cs + cn
    res["all_steps_pts_per_cpu_s"] = rate(n, total_cpu)
    res["ratio_to_decode"] = round((n / total_cpu) / (n / cpu), 3) if cpu > 0 else None
    if csf:
        from cim.terrain.csf import csf_ground

        g_csf, wc, cc = timed(csf_ground, x, y, z)
        res["ground_csf"] = {"wall_s": round(wc, 3), "cpu_s": round(cc, 3), "pts_per_cpu_s": rate(n, cc),
                             "speedup_smrf_vs_csf_cpu": round(cc / cg, 2) if cg > 0 else None,
                             "agreement_with_smrf": round(float((g_csf == ground).mean()), 4)}
        if pc.has("classification") and (pc["classification"] == 2).any():
            truth = pc["classification"] == 2
            res["ground_csf"]["vs_labels"] = {k: round(v, 4) for k, v in filter_errors(truth, g_csf).items()}
    if pc.has("classification") and (pc["classification"] == 2).any():
        truth = pc["classification"] == 2
        res["ground_smrf"]["vs_labels"] = {k: round(v, 4) for k, v in filter_errors(truth, ground).items()}
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(name, json.dumps(res), flush=True)
    return res


def _tile_job(path: str) -> tuple[int, float, float]:
    """Decode + ground + DTM of one file in a worker; returns (points, wall, cpu) of ground + DTM."""
    pc = las.read(path)
    w, c = time.perf_counter(), time.process_time()
    g = classify_ground(pc)
    dtm_grid(pc, GridSpec.from_points(pc.x, pc.y, 0.5), ground=g)
    return len(pc), time.perf_counter() - w, time.process_time() - c


def two_cores(files: list[Path]) -> dict:
    w = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_tile_job, [str(f) for f in files]))
    wall = time.perf_counter() - w
    n = sum(p[0] for p in parts)
    cpu = sum(p[2] for p in parts)
    busy = max(sum(p[1] for p in parts[0::2]), sum(p[1] for p in parts[1::2]))
    return {"files": len(files), "points": n, "wall_s_incl_decode": round(wall, 3),
            "ground_dtm_cpu_s": round(cpu, 3), "ground_dtm_pts_per_s_2cores_from_cpu": rate(n, cpu / 2),
            "ground_dtm_pts_per_s_2cores_wall": rate(n, busy)}


def isprs_table() -> dict:
    rows = {}
    cpu = 0.0
    n_total = 0
    for name in ISPRS_SAMPLES:
        pc = las.read(SHARED / "isprs" / f"{name}.laz")
        pred, _, c = timed(ground_mask, pc.x, pc.y, pc.z)
        cpu += c
        n_total += len(pc)
        rows[name] = {k: round(v * 100, 2) for k, v in filter_errors(pc["classification"] == 2, pred).items()}
    mean = {k: round(float(np.mean([r[k] for r in rows.values()])), 2) for k in ("type1", "type2", "total", "kappa")}
    return {"unit": "percent", "parameters": f"defaults {asdict(SmrfParams())}",
            "samples": rows, "mean": mean, "pts_per_cpu_s": rate(n_total, cpu)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "terrain.json"))
    ap.add_argument("--quick", action="store_true", help="Delft only, no BCTS")
    args = ap.parse_args()
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(v, 2) for v in os.getloadavg()]},
        "notes": "pts_per_cpu_s = points per CPU second of this process (single thread); the machine is shared, "
                 "so wall seconds include other users' load (see load_average).",
    }
    delft = [REPO / "data" / "delft" / f"ahn3_cropped_{i}.laz" for i in (1, 2)]
    result["delft_ahn3"] = dataset("delft", delft, "EPSG:7415", 0.5, csf=False)
    result["delft_ahn3_east_with_csf"] = dataset("delft-east", delft[1:], "EPSG:7415", 0.5, csf=True)
    bcts = [SHARED / "bcts" / f"bcts_{i}.laz" for i in range(1, 5)]
    if not args.quick and all(p.exists() for p in bcts):
        result["bcts_forest"] = dataset("bcts", bcts, None, 0.5, csf=False)
        result["two_cores_bcts"] = two_cores(bcts)
    if (SHARED / "isprs").is_dir():
        result["isprs"] = isprs_table()
        print("isprs", json.dumps(result["isprs"]["mean"]), flush=True)
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
