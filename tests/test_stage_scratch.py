"""Two stages of one name in a job (two write.copc with different options) each get their own scratch folder:
each writes what it writes alone in a job, and a resume re-runs only the one whose options changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj

from cim.io import las
from cim.pipeline.execute import run
from cim.points import PointCloud
from tests.helpers import write_job

CRS = "EPSG:25832"


def _points(path: Path) -> Path:
    """20,000 points on a gently sloped 100 m x 100 m square (4 tiles of 50 m)."""
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 100, 20_000), rng.uniform(0, 100, 20_000)
    return las.write(path, PointCloud({"x": x + 691_000.0, "y": y + 5_334_000.0, "z": 200.0 + 0.05 * x
                                       + rng.normal(0, 0.2, len(x)), "intensity": rng.integers(0, 999, len(x))
                                       .astype("u2")}, pyproj.CRS(CRS)))


def _job(path: Path, source: Path, copcs: list[tuple[str, float]]) -> Path:
    stages = "".join(f'\n[[stages]]\ntype = "write.copc"\nname = "{name}"\nscale = {scale}\n' for name, scale in copcs)
    return write_job(path, f"""[job]\nname = "scratch"\noutput = "{path.with_suffix('').as_posix()}"\n
[[stages]]\ntype = "read.las"\nfiles = ["{source.as_posix()}"]\n
[[stages]]\ntype = "tile"\nsize = 50.0\nbuffer = 5.0\n{stages}""")


def test_two_stages_of_one_name_keep_their_own_scratch(tmp_path: Path) -> None:
    source = _points(tmp_path / "points.las")
    alone = {}
    for name, scale in (("a", 0.001), ("b", 0.01), ("b", 0.1)):  # truth: each stage alone in a job
        result = run(_job(tmp_path / f"alone-{name}-{scale}.toml", source, [(name, scale)]), scheduler="threads",
                     workers=1)
        assert result.report.ok
        alone[name, scale] = (result.job.out_dir / f"{name}.copc.laz").read_bytes()
    assert alone["b", 0.01] != alone["b", 0.1]

    job = _job(tmp_path / "both.toml", source, [("a", 0.001), ("b", 0.01)])
    first = run(job, scheduler="threads", workers=1)
    assert first.report.ok, [o.error for o in first.report.by_status("failed")]
    out = first.job.out_dir
    assert (out / "a.copc.laz").read_bytes() == alone["a", 0.001]
    assert (out / "b.copc.laz").read_bytes() == alone["b", 0.01]
    # the second stage's options change: only its steps and finish run again, from its own tile steps
    job.write_text(job.read_text().replace("scale = 0.01\n", "scale = 0.1\n"))
    again = run(job, scheduler="threads", workers=1)
    assert again.report.ok, [o.error for o in again.report.by_status("failed")]
    ran = {o.key.split("/")[0] for o in again.report.by_status("done")}
    assert "01-write.copc" in ran and "00-write.copc" not in ran, ran
    assert again.report.outcomes["01-write.copc/finish"].status == "done"
    assert (out / "a.copc.laz").read_bytes() == alone["a", 0.001]
    assert (out / "b.copc.laz").read_bytes() == alone["b", 0.1]
