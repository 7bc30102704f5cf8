"""The demo job (pipelines/demo.toml) with this checkout's code against a git revision's (environment variable
``CIM_BENCH_BEFORE``, default: where this branch left main): work-folder bytes, wall and CPU time, 3 alternating
runs each, medians, and whether the products are byte-identical. ``python -m benchmarks io_demo``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import REPO, base_revision, code_at, medians, product_digests, run_cim, write_result

RUNS = 3


def main() -> None:
    revision = base_revision()
    laz = sum(p.stat().st_size for p in (REPO / "data" / "delft").glob("ahn3_cropped_*.laz"))
    with tempfile.TemporaryDirectory() as tmp:
        old = code_at(revision, Path(tmp) / "old")
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        digests: dict[str, dict[str, str]] = {}
        for i in range(RUNS):  # alternating, so that load from elsewhere hits both alike
            for label, code in (("before", old), ("after", REPO)):
                out = Path(tmp) / f"{label}{i}"
                args = ["run", str(REPO / "pipelines" / "demo.toml"), "--out", str(out), "--workers", "2"]
                runs[label].append(run_cim(code, args, out))
                digests[label] = product_digests(out)
    median = medians(runs)
    write_result("pipeline_core", {
        "job": "pipelines/demo.toml (Delft, 848,942 points, 9 tiles of 100 m, 2 local workers)",
        "before_revision": revision,
        "input_laz_bytes": laz,
        "median": median,
        "work_folder_ratio_to_laz": {label: round(m["work_bytes"] / laz, 2) for label, m in median.items()},
        "runs": {label: [{k: round(v, 3) for k, v in r.items()} for r in rs] for label, rs in runs.items()},
        "products": len(digests["after"]),
        "products_identical": digests["before"] == digests["after"],
        "note": "wall and CPU of the whole `cim run` (interpreter and Dask start-up included; CPU = user + system "
                "of the run's processes). The machine is shared: compare the alternating runs, not other files.",
    })
