"""Synthetic city generation: seconds per part for the issue's reference block, plus baselines in the same run.

Reference block (issue 3): 400 m x 400 m, ALS 10 pulses/m², an MLS drive of ~1 km, 50 panoramas of 2048x1024.
Baselines measured in the same process on the same scene: bare open3d ``cast_rays`` for as many rays as the
ALS, MLS and panorama stages cast (the floor any ray-casting simulator pays), and a bare laspy/lazrs LAZ write of
the same MLS points. The ratios say how much the simulator adds on top (returns model, classes, colours, files).

    .venv/bin/python benchmarks/bench_synth.py [--scale 1.0] [--out benchmarks/results/synth.json]

``--scale`` < 1 shrinks the drive and the panorama count (not the block or the ALS density) for a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import laspy
import numpy as np

from cim.synth import SynthConfig, generate
from cim.synth.raycast import Caster

ROOT = Path(__file__).resolve().parents[1]


def _bare_raycast(caster: Caster, n: int, rng: np.random.Generator, visible: bool = False) -> float:
    """Seconds for open3d alone to cast ``n`` random rays from 3 m above ground: against the opaque mesh and the
    crowns separately as the lidar does (``visible=False``), or once against both as the renderer does."""
    e = caster.scene.config.extent
    done, start = 0, time.perf_counter()
    while done < n:
        m = min(1_000_000, n - done)
        origins = np.column_stack([rng.uniform(0, e, m), rng.uniform(0, e, m), np.full(m, 3.0)])
        d = rng.normal(size=(m, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        if visible:
            caster.cast_visible(origins, d)
        else:
            caster.cast_opaque(origins, d)
            caster.cast_crowns(origins, d)
        done += m
    return time.perf_counter() - start


def _bare_laz_write(path: Path, city_laz: Path) -> tuple[float, int]:
    las = laspy.read(city_laz)
    start = time.perf_counter()
    las.write(path)
    return time.perf_counter() - start, len(las.points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "synth.json")
    args = parser.parse_args()
    config = SynthConfig(extent=400.0, seed=7, als_density=10.0, drive_length=1000.0 * args.scale,
                         panorama_width=2048, panorama_count=max(1, int(round(50 * args.scale))),
                         panorama_spacing=20.0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        city = generate(Path(tmp) / "city", config)
        total = time.perf_counter() - start
        truth = json.loads(city.truth_json.read_text())
        sizes = {p.name: p.stat().st_size for p in city.out_dir.iterdir() if p.is_file()}
        sizes["panoramas/*.jpg"] = sum(p.stat().st_size for p in city.panorama_dir.glob("*.jpg"))
        sizes["depth/*.tif"] = sum(p.stat().st_size for p in city.depth_dir.glob("*.tif"))
        caster = Caster(city.scene)
        rng = np.random.default_rng(0)
        mls_pulses = int(truth["drive"]["duration"] * config.mls_pulse_rate) * config.mls_scanners
        pano_rays = truth["panoramas"]["count"] * config.panorama_width * config.panorama_height
        als_pulses = int(truth["als"]["pulse_rate"] * (config.extent + 10) / config.als_speed * truth["als"]["strips"])
        bare = {
            "als_raycast": _bare_raycast(caster, als_pulses, rng),
            "mls_raycast": _bare_raycast(caster, mls_pulses, rng),
            "panorama_raycast": _bare_raycast(caster, pano_rays, rng, visible=True),
        }
        bare_write, mls_points = _bare_laz_write(Path(tmp) / "bare.laz", city.mls_laz)
    t = city.timings
    result = {
        "benchmark": "synth",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "note": "2 cores shared with other work; wall-clock seconds"},
        "config": {"extent": config.extent, "als_density": config.als_density, "drive_length": config.drive_length,
                   "panoramas": truth["panoramas"]["count"], "panorama_size": [config.panorama_width,
                                                                             config.panorama_height],
                   "mls_pulse_rate": config.mls_pulse_rate, "mls_scanners": config.mls_scanners, "scale": args.scale},
        "seconds": {**t, "total": round(total, 2)},
        "counts": {"buildings": len(city.scene.buildings), "als_points": truth["als"]["points"],
                   "als_pulses": als_pulses, "mls_points": truth["mls"]["points"], "mls_pulses": mls_pulses,
                   "drive_length_m": truth["drive"]["length"], "panorama_rays": pano_rays},
        "throughput": {
            "als_points_per_s": round(truth["als"]["points"] / max(t["als_simulate"], 1e-9)),
            "mls_points_per_s": round(truth["mls"]["points"] / max(t["mls_simulate"], 1e-9)),
            "panorama_seconds_each": round(t["panoramas"] / max(truth["panoramas"]["count"], 1), 3),
        },
        "baseline_seconds": {k: round(v, 2) for k, v in {**bare, "mls_laz_write_laspy": bare_write}.items()},
        "ratio_vs_baseline": {
            "als_simulate / bare raycast": round(t["als_simulate"] / bare["als_raycast"], 2),
            "mls_simulate / bare raycast": round(t["mls_simulate"] / bare["mls_raycast"], 2),
            "panoramas (render + JPEG + depth TIFF) / bare raycast": round(t["panoramas"] / bare["panorama_raycast"], 2),
            "mls_write (cim.io.las) / laspy write": round(t["mls_write"] / bare_write, 2),
        },
        "mls_points_written": mls_points,
        "output_bytes": sizes,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
