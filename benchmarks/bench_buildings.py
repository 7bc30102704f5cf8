"""Building reconstruction: buildings per second (one process, and the tiled Dask pipeline on 2 workers = the
machine's 2 cores), peak memory, and accuracy, on the synthetic city (400 m block, ALS 10 pulses/m²) and on Delft
AHN3 + BGT footprints.

Baseline in the same run: a bare laspy/lazrs decode of the same LAZ input (the floor any tool pays to read the
points); ``ratio_vs_decode`` = reconstruction seconds / decode seconds (``_cpu``: CPU seconds of this process).
The machine is shared: the load average is recorded before and after each part (``load_average``: 1, 5, 15
minutes).

Accuracy: roof type, LoD2.2 roof RMSE against the true solids (synthetic), the 3D point-to-model RMSE per roof
type (every class-6 point in the footprint to the nearest face of its solid), where the squared error comes from
(``error_sources``), and the validity of every solid.

    .venv/bin/python benchmarks/bench_buildings.py [--extent 400] [--out benchmarks/results/buildings.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path

import laspy
import numpy as np
import psutil
import shapely

import cim.io.las as las
from cim.buildings.evaluate import covered_truths, error_sources, footprint_of, iou, roof_rmse
from cim.buildings.footprints import read_footprints
from cim.buildings.run import reconstruct_cloud, summarise
from cim.buildings.validity import check_solid
from cim.cityjson import read_cityjson
from cim.points import PointCloud

ROOT = Path(__file__).resolve().parents[1]


class PeakRss:
    """Peak resident memory of this process and its children (sampled every 50 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                rss = 0
            self.peak = max(self.peak, rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _decode(paths: list[Path], repeat: int = 3) -> tuple[float, float]:
    """Median (wall, CPU) seconds of a bare laspy/lazrs decode of ``paths``: the baseline. The shared machine's
    speed drifts by a factor of two within minutes, so it is measured next to what it is compared with, and CPU
    seconds (this process only) are reported beside wall seconds."""
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        for p in paths:
            laspy.read(p)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def _pipeline(laz: list[Path], footprints: Path, crs: str | None, tile: float, buffer: float, workers: int) -> dict:
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        doc = {"job": {"name": "bench", "output": str(out), **({"crs": crs} if crs else {})},
               "stages": [{"type": "read.las", "files": [str(p) for p in laz]},
                          {"type": "tile", "size": tile, "buffer": buffer},
                          {"type": "buildings.lod2", "footprints": str(footprints)},
                          {"type": "write.cityjson"},
                          {"type": "tiles.buildings"}]}
        start = time.perf_counter()
        with PeakRss() as mem:
            result = run_job(parse_job(doc, out / "job.toml"), workers=workers)
        seconds = time.perf_counter() - start
        report = json.loads((out / "buildings" / "report.json").read_text())
        assert result.report.ok
    return {"workers": workers, "tile_size": tile, "buffer": buffer, "seconds": round(seconds, 2),
            "buildings": report["buildings"], "buildings_per_s": round(report["buildings"] / seconds, 2),
            "peak_rss_mib": round(mem.peak / 2**20, 1), "note": "whole job: read, tile, model, CityJSON, 3D Tiles"}


def _in_process(cloud: PointCloud, fps, decode: tuple[float, float] | None = None) -> tuple[list, dict]:
    """Models and speed of one ``reconstruct_cloud`` call (wall and CPU seconds, ratios to ``decode``)."""
    start, cpu = time.perf_counter(), time.process_time()
    with PeakRss() as mem:
        models = reconstruct_cloud(cloud, fps)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    speed = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "buildings": len(models),
             "buildings_per_s": round(len(models) / seconds, 2), "buildings_per_cpu_s": round(len(models) / cpu, 2),
             "peak_rss_mib": round(mem.peak / 2**20, 1)}
    if decode is not None:
        speed.update(ratio_vs_decode=round(seconds / decode[0], 1), ratio_vs_decode_cpu=round(cpu / decode[1], 1))
    return models, speed


def _measured(paths: list[Path], cloud: PointCloud, fps) -> tuple[list, dict]:
    """``reconstruct_cloud`` timed against the decode baseline measured just before, with the load average."""
    load = _load()
    decode = _decode(paths)
    models, speed = _in_process(cloud, fps, decode)
    speed.update(decode_seconds=round(decode[0], 3), decode_cpu_seconds=round(decode[1], 3),
                 load_average=[load, _load()])
    return models, speed


def _measured_pipeline(paths: list[Path], footprints: Path, crs: str | None, tile: float, buffer: float,
                       workers: int) -> dict:
    """The whole job on ``workers`` processes, timed against the decode baseline measured just before."""
    load = _load()
    decode, _ = _decode(paths)
    pipe = _pipeline(paths, footprints, crs, tile, buffer, workers)
    pipe.update(decode_seconds=round(decode, 3), ratio_vs_decode=round(pipe["seconds"] / decode, 1),
                load_average=[load, _load()])
    return pipe


def synthetic(extent: float, workers: int) -> dict:
    from cim.synth import SynthConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        city = generate(Path(tmp) / "city", SynthConfig(extent=extent, seed=7, als_density=10.0, mls=False))
        cloud = las.read(city.als_laz)
        truth = read_cityjson(city.buildings_cityjson)
        by_id = {t.id: t for t in truth}
        fps = read_footprints(city.footprints_gpkg, cloud.crs)
        models, speed = _measured([city.als_laz], cloud, fps)
        roof_ok = [m.attributes["roof_type"] == int(by_id[m.id].attributes["roofType"]) for m in models]
        rmse = [roof_rmse(m.lod22, by_id[m.id]) for m in models if m.lod22 is not None]
        valid = [check_solid(g).valid for m in models for g in (m.lod12, m.lod22) if g is not None]
        derived, dspeed = _in_process(cloud, None)
        tfp = [footprint_of(t) for t in truth]
        ious = []
        for m in derived:
            js = covered_truths(m.footprint, tfp)
            if js:
                ious.append(iou(m.footprint, shapely.union_all([tfp[j] for j in js])))
        pipe = _measured_pipeline([city.als_laz], city.footprints_gpkg, None, 100.0, 40.0, workers)
        building_xyz = cloud.xyz[cloud["classification"] == 6]
        return {
            "extent_m": extent, "points": len(cloud), "buildings": len(truth),
            "in_process": speed, "pipeline": pipe,
            "accuracy": {"roof_type_accuracy": round(float(np.mean(roof_ok)), 4),
                         "point_to_model_rmse_by_roof_type": summarise(models)["rmse_lod22_by_roof_type"],
                         "error_sources": error_sources(models, building_xyz),
                         "lod22_roof_rmse_median_m": round(float(np.median(rmse)), 4),
                         "lod22_roof_rmse_max_m": round(float(np.max(rmse)), 4),
                         "valid_solids": round(float(np.mean(valid)), 4),
                         "derived_footprints": len(derived), "derived_iou_mean": round(float(np.mean(ious)), 4),
                         "derived_iou_min": round(float(np.min(ious)), 4),
                         "derived_in_process": dspeed},
        }


def delft(workers: int) -> dict:
    laz = [ROOT / "data" / "delft" / f"ahn3_cropped_{i}.laz" for i in (1, 2)]
    fp_path = ROOT / "data" / "delft" / "bgt_pand.sqlite"
    cloud = PointCloud.concat([las.read(p, crs="EPSG:7415") for p in laz])
    fps = read_footprints(fp_path, "EPSG:7415")
    models, speed = _measured(laz, cloud, fps)
    summary = summarise(models)
    solids = [g for m in models for g in (m.lod12, m.lod22) if g is not None]
    summary["valid_solids"] = round(float(np.mean([check_solid(g).valid for g in solids])), 4)
    summary["error_sources"] = error_sources(models, cloud.xyz[cloud["classification"] == 6])
    pipe = _measured_pipeline(laz, fp_path, "EPSG:7415", 100.0, 30.0, workers)
    return {"points": len(cloud), "footprints": len(fps), "in_process": speed,
            "pipeline": pipe, "summary": summary}


def roof_library_part(scale: float = 1.0, repeats: int = 3) -> dict:
    """The German roof library (``cim.synth.rooflib``) scanned in both styles: roof type accuracy, roof RMSE to
    the true roofs (image matching: after removing each building's median offset), validity, speed. The styles run
    ``repeats`` times, alternating (a shared machine's load drifts); speed is the median run by CPU seconds."""
    from collections import Counter

    from cim.buildings.footprints import Footprint
    from cim.synth.rooflib import roof_library
    from cim.synth.scanstyles import STYLES, scan

    lib = roof_library(seed=0, scale=scale)
    fps = [Footprint(b.id, b.footprint) for b in lib]
    out: dict = {"buildings": len(lib), "kinds": dict(sorted(Counter(b.kind for b in lib).items()))}
    clouds = {name: scan(lib, style, seed=0) for name, style in STYLES.items()}
    runs: dict[str, list[tuple[list, dict]]] = {name: [] for name in STYLES}
    for _ in range(repeats):
        for name in STYLES:
            load = _load()
            models, speed = _in_process(clouds[name], fps)
            speed["load_average"] = [load, _load()]
            runs[name].append((models, speed))
    for name, style in STYLES.items():
        ordered = sorted(runs[name], key=lambda run: run[1]["cpu_seconds"])
        models, speed = ordered[len(ordered) // 2]
        rmse = np.array([roof_rmse(m.lod22, b.solids, remove_offset=style.offset > 0)
                         for b, m in zip(lib, models) if m.lod22 is not None])
        wrong = Counter(f"{b.kind}->{m.attributes.get('roof_type')}" for b, m in zip(lib, models)
                        if m.attributes.get("roof_type") != b.roof_type)
        valid = [check_solid(g).valid for m in models for g in (m.lod12, m.lod22) if g is not None]
        out[name] = {
            "points": len(clouds[name]), "in_process": speed,
            "runs_buildings_per_cpu_s": [run[1]["buildings_per_cpu_s"] for run in runs[name]],
            "roof_type_accuracy": round(float(np.mean([m.attributes.get("roof_type") == b.roof_type
                                                       for b, m in zip(lib, models)])), 3),
            "roof_type_errors": dict(sorted(wrong.items())),
            "roof_rmse_m": {"median": round(float(np.median(rmse)), 3), "p90": round(float(np.percentile(rmse, 90)), 3),
                            "max": round(float(rmse.max()), 3)},
            "valid_solids": round(float(np.mean(valid)), 4),
            "status": dict(sorted(Counter(m.status for m in models).items())),
            "roof_method": dict(sorted(Counter(str(m.attributes.get("roof_method")) for m in models).items())),
        }
    return out


def bag3d_part() -> dict:
    """Real roof shapes: the 3DBAG LoD2.2 solids (``shared/data/3dbag``, CC BY 4.0) of a residential window of
    tile 5912 (the one the method was developed on, as the test does) and, under ``check``, of a window of tile
    5910 that it was not developed on, scanned in both styles and reconstructed in their own footprints."""
    shared = Path(os.environ.get("CIM_SHARED_DATA") or ROOT.parent / "shared" / "data")
    out = _bag3d_window(shared / "3dbag" / "3dbag_v210908_fd2cee53_5912.json", (85750, 447050, 85880, 447180))
    out["check"] = _bag3d_window(shared / "3dbag" / "3dbag_v210908_fd2cee53_5910.json",
                                 (85540, 446770, 85670, 446900))
    return out


def _bag3d_window(path: Path, bounds: tuple[float, float, float, float]) -> dict:
    """The solids whose first vertex lies in ``bounds``: roof RMSE to the solids (image matching after each
    building's offset) and the share of buildings with the solids' roof plane count."""
    from collections import Counter

    from shapely.geometry import box

    from cim.buildings.footprints import Footprint
    from cim.synth.rooflib import buildings_from_solids
    from cim.synth.scanstyles import STYLES, scan

    solids = [g for g in read_cityjson(path) if g.lod == "2.2"]
    window = box(*bounds)
    lib = buildings_from_solids([s for s in solids if window.contains(shapely.Point(s.faces[0][0, :2]))])
    z0 = float(np.median([b.ground for b in lib]))
    out: dict = {"buildings": len(lib), "window": list(window.bounds), "source": path.name}
    for name, style in STYLES.items():
        cloud = scan(lib, style, seed=1, ground=lambda x, y: np.full(len(x), z0))
        models, speed = _in_process(cloud, [Footprint(b.id, b.footprint) for b in lib])
        rmse = np.array([roof_rmse(m.lod22, b.solids, remove_offset=style.offset > 0) for b, m in zip(lib, models)])
        same = np.mean([m.attributes.get("n_planes") == b.n_planes for b, m in zip(lib, models)])
        out[name] = {"roof_rmse_m": {q: round(float(np.percentile(rmse, p)), 3)
                                     for q, p in (("median", 50), ("p75", 75), ("p90", 90), ("max", 100))},
                     "plane_count_equal": round(float(same), 3), "in_process": speed,
                     "status": dict(sorted(Counter(m.status for m in models).items()))}
    return out


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages now (the machine is shared)."""
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--extent", type=float, default=400.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "buildings.json")
    parser.add_argument("--parts", default="synthetic,delft,roof_library,3dbag",
                        help="comma-separated parts to run; the others keep their results in --out")
    parser.add_argument("--library-scale", type=float, default=1.0, help="roof library size (1: ~95 buildings)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each roof library style")
    args, _ = parser.parse_known_args()  # also when run as ``python -m benchmarks buildings``
    parts = {"synthetic": lambda: synthetic(args.extent, args.workers), "delft": lambda: delft(args.workers),
             "roof_library": lambda: roof_library_part(args.library_scale, args.repeats), "3dbag": bag3d_part}
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "cpu": platform.processor() or platform.machine(), "load_average_at_start": _load()}
    for name in args.parts.split(","):
        result[name] = parts[name]()
        result[name]["machine"] = machine
    result["peak_rss_mib_driver"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    machine["load_average_at_end"] = _load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
