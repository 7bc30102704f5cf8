"""Read -> tile -> write LAZ (``cim run``, 2 local workers) with this checkout's code and with a git revision's
(``CIM_BENCH_BEFORE``, default: where this branch left main), against the raw laspy/lazrs decode of the same,
unmodified files (Delft AHN3 crops, and the bcts files where ../shared is present). Three alternating rounds (decode,
before, after), medians: wall and CPU time, work-folder bytes, points/s, ratio to the decode.
``python -m benchmarks io``."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import laspy

from benchmarks.common import REPO, SHARED, base_revision, code_at, medians, product_digests, run_cim, write_result

RUNS = 3


def _groups() -> dict[str, tuple[list[Path], str | None]]:
    """The input groups (files, CRS override): each runs as its own job."""
    groups = {"delft": (sorted((REPO / "data" / "delft").glob("*.laz")), "EPSG:7415")}
    if (SHARED / "bcts").is_dir():
        groups["bcts"] = (sorted((SHARED / "bcts").glob("*.laz")), None)
    return groups


def _job(path: Path, files: list[Path], crs: str | None) -> Path:
    crs_line = f'crs = "{crs}"\n' if crs else ""
    path.write_text(f"[job]\n{crs_line}[[stages]]\ntype = \"read.las\"\nfiles = {json.dumps([str(f) for f in files])}"
                    "\n[[stages]]\ntype = \"tile\"\n[[stages]]\ntype = \"write.las\"\n")
    return path


def _decode(files: list[Path]) -> float:
    start = time.perf_counter()
    for f in files:
        laspy.read(f)
    return time.perf_counter() - start


def main() -> None:
    revision = base_revision()
    groups = _groups()
    files = [f for fs, _ in groups.values() for f in fs]
    points = sum(laspy.open(f).header.point_count for f in files)
    laz = sum(f.stat().st_size for f in files)
    with tempfile.TemporaryDirectory() as tmp:
        old = code_at(revision, Path(tmp) / "old")
        jobs = {g: _job(Path(tmp) / f"{g}.toml", fs, crs) for g, (fs, crs) in groups.items()}
        decode: list[float] = []
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        same = True
        for i in range(RUNS):  # alternating, so that load from elsewhere hits all three alike
            decode.append(_decode(files))
            digests = {}
            for label, code in (("before", old), ("after", REPO)):
                total = {"wall_s": 0.0, "cpu_s": 0.0, "work_bytes": 0}
                for group, job in jobs.items():
                    out = Path(tmp) / f"{label}{i}-{group}"
                    for k, v in run_cim(code, ["run", str(job), "--out", str(out), "--workers", "2"], out).items():
                        total[k] += v
                    digests[(label, group)] = product_digests(out)
                runs[label].append(total)
            same &= all(digests[("before", g)] == digests[("after", g)] for g in jobs)
    median = medians(runs)
    decode_s = statistics.median(decode)
    write_result("io", {
        "job": "read.las -> tile -> write.las, one job per group, 2 local workers",
        "groups": {g: [f.name for f in fs] for g, (fs, _) in groups.items()},
        "points": points,
        "input_laz_bytes": laz,
        "before_revision": revision,
        "raw_decode_s": round(decode_s, 3),
        "raw_decode_points_per_s": round(points / decode_s),
        "median": median,
        "points_per_s": {label: round(points / m["wall_s"]) for label, m in median.items()},
        "ratio_to_raw_decode": {label: round(decode_s / m["wall_s"], 3) for label, m in median.items()},
        "work_folder_ratio_to_laz": {label: round(m["work_bytes"] / laz, 2) for label, m in median.items()},
        "runs": {label: [{k: round(v, 3) for k, v in r.items()} for r in rs] for label, rs in runs.items()},
        "decode_runs_s": [round(d, 3) for d in decode],
        "products_identical": same,
        "note": "wall and CPU of the whole `cim run` (interpreter and Dask start-up included; CPU = user + system of "
                "the run's processes). Raw decode is laspy.read (lazrs, all cores) of the same files in this "
                "process. The machine may be shared: compare the alternating runs, not other files.",
    })
