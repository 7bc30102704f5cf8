"""The hostile-input corpus through the real ``cim`` command: each bad input is refused before any work with one
line naming the file or key (exit code 2), no traceback, nothing written outside ``--out`` and no half product."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.conftest import (MAXX_AT, MINX_AT, OFFSET_AT, POINT_COUNT_AT, REPO, SCALE_AT, assert_no_products,
                                    assert_refused, job_text, patch, write_points)

NAN, INF = float("nan"), float("inf")


def _nan_bounds(p: Path) -> tuple[Path, str]:
    return patch(p, MAXX_AT, "d", NAN), "not finite"


def _scale_1e12(p: Path) -> tuple[Path, str]:
    return patch(p, SCALE_AT, "3d", 1e12, 1e12, 1e12), "1000000000000.0"


def _nan_scale(p: Path) -> tuple[Path, str]:
    return patch(p, SCALE_AT, "d", NAN), "nan"


def _inf_offset(p: Path) -> tuple[Path, str]:
    return patch(p, OFFSET_AT, "d", INF), "inf"


def _zero_scale(p: Path) -> tuple[Path, str]:
    return patch(p, SCALE_AT + 8, "d", 0.0), "scale"


def _huge_bounds(p: Path) -> tuple[Path, str]:
    return patch(p, MINX_AT, "d", -1e15), "not plausible"


def _min_above_max(p: Path) -> tuple[Path, str]:
    return patch(p, MINX_AT, "d", 1e6), "not plausible"


def _zero_bounds(p: Path) -> tuple[Path, str]:
    return patch(p, MAXX_AT, "6d", *[0.0] * 6), "header bounds are all 0"


def _lying_count(p: Path) -> tuple[Path, str]:
    return patch(p, POINT_COUNT_AT, "Q", 20_000), "20,000 points"


def _truncated_las(p: Path) -> tuple[Path, str]:
    p.write_bytes(p.read_bytes()[:-5000])
    return p, "truncated"


def _truncated_laz(p: Path) -> tuple[Path, str]:
    laz = write_points(p.with_suffix(".laz"), n=20_000)
    laz.write_bytes(laz.read_bytes()[: laz.stat().st_size * 6 // 10])
    return laz, "truncated"


def _zero_bytes(p: Path) -> tuple[Path, str]:
    p.write_bytes(b"")
    return p, "not a readable LAS/LAZ file"


def _not_las(p: Path) -> tuple[Path, str]:
    p.write_text("x,y,z\n1,2,3\n")
    return p, "not a readable LAS/LAZ file"


def _header_only(p: Path) -> tuple[Path, str]:
    p.write_bytes(p.read_bytes()[:200])
    return p, "not a readable LAS/LAZ file"


BAD_FILES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "nan-bounds": _nan_bounds, "scale-1e12": _scale_1e12, "nan-scale": _nan_scale, "inf-offset": _inf_offset,
    "zero-scale": _zero_scale, "huge-bounds": _huge_bounds, "min-above-max": _min_above_max,
    "zero-bounds": _zero_bounds,
    "lying-point-count": _lying_count, "truncated-las": _truncated_las, "truncated-laz": _truncated_laz,
    "zero-bytes": _zero_bytes, "not-las": _not_las, "cut-in-header": _header_only,
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_point_file_info(case: str, points: Path, sandbox) -> None:
    path, says = BAD_FILES[case](points)
    line = assert_refused(sandbox("info", str(path)), path.name)
    assert says in line


@pytest.mark.parametrize("case", ["nan-bounds", "scale-1e12", "nan-scale", "lying-point-count", "truncated-laz",
                                  "huge-bounds", "zero-bounds", "zero-bytes", "not-las"])
def test_bad_point_file_run(case: str, points: Path, tmp_path: Path, sandbox) -> None:
    path, says = BAD_FILES[case](points)
    out = tmp_path / "o" / "out"
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, path, job_extra='crs = "EPSG:7415"'))
    line = assert_refused(sandbox("run", str(job), "--scheduler", "threads", out=out), path.name)
    assert says in line
    assert_no_products(out)
    assert not (out / ".cim" / "parts").exists()  # refused before partitioning


# --- job descriptions ---------------------------------------------------------------------------------------------

RASTER = '[[stages]]\ntype = "raster.dtm"\nresolution = {res}\n'


def _job_case(name: str, tmp: Path, points: Path, out: Path) -> tuple[list[str], list[str]]:
    """Job file text and the extra CLI args for each bad job; returns (args, names the message must hold)."""
    job = tmp / "job.toml"
    args: list[str] = []
    text = job_text(out, points)
    names = [job.name]
    if name == "toml-syntax":
        text = text.replace('name = "hostile"', 'name = "hostile')
    elif name == "unknown-job-key":
        text = text.replace('name = "hostile"', 'name = "hostile"\nthreads = 4')
        names.append("job.threads")
    elif name == "unknown-stage":
        text = text.replace('type = "write.las"', 'type = "write.lax"')
        names.append("write.las")  # the suggestion
    elif name == "no-input-match":
        text = job_text(out, points.parent / "nothing-*.laz")
        names.append("stages[0].files[0]")
    elif name == "tile-size-tiny":
        text = job_text(out, points, size=0.0001, buffer=0.0)
        names += ["stages[1].size", "100,000"]
    elif name == "tile-size-negative":
        text = job_text(out, points, size=-5.0)
        names.append("stages[1].size")
    elif name == "dtm-resolution-tiny":
        text = job_text(out, points, extra=RASTER.format(res=0.001))
        names += ["stages[2].resolution", "100,000,000"]
    elif name == "max-tiles-flag":
        args = ["--max-tiles", "3"]
        names.append("3 ")
    elif name == "max-tile-cells-flag":
        text = job_text(out, points, extra=RASTER.format(res=0.5))
        args = ["--max-tile-cells", "1000"]
        names.append("stages[2].resolution")
    elif name == "max-tiles-zero":
        text = text.replace('name = "hostile"', 'name = "hostile"\nmax_tiles = 0')
        names.append("job.max_tiles")
    elif name == "folder-up":
        text = job_text(out, points, extra='[[stages]]\ntype = "raster.dsm"\nfolder = "../../x"\n')
        names += ["stages[2].folder", "outside the output folder"]
    elif name == "folder-absolute":
        text = job_text(out, points, extra=f'[[stages]]\ntype = "raster.dsm"\nfolder = "{tmp.as_posix()}/abs"\n')
        names += ["stages[2].folder", "absolute"]
    elif name == "ndsm-folder-up":
        text = job_text(out, points, extra='[[stages]]\ntype = "raster.ndsm"\ndtm_folder = "../dtm"\n')
        names.append("stages[2].dtm_folder")
    elif name == "bad-crs-flag":
        args = ["--crs", "EPSG:99999999"]
        names = ["99999999"]
    elif name == "readers-after-tile":
        text = text.replace('type = "read.las"', 'type = "tile"\nsize = 50.0\n\n[[stages]]\ntype = "read.las"', 1)
        names.append("stages[")
    elif name == "tile-size-inf":
        text = text.replace("size = 50.0", "size = inf")
        names += ["stages[1].size", "not a finite number"]
    elif name == "resolution-nan":
        text = job_text(out, points, extra=RASTER.format(res="nan"))
        names.append("stages[2].resolution")
    elif name == "area-nan":
        text = text.replace('name = "hostile"', 'name = "hostile"\narea = [nan, 0.0, 1.0, 1.0]')
        names.append("job.area")
    elif name == "area-inverted":
        text = text.replace('name = "hostile"', 'name = "hostile"\narea = [85100.0, 446000.0, 85000.0, 446100.0]')
        names.append("job.area")
    elif name == "missing-job-file":
        return ["run", str(tmp / "nope.toml")], ["nope.toml"]
    job.write_text(text, encoding="utf-8")
    return ["run", str(job), "--scheduler", "threads", *args], names


JOB_CASES = ["toml-syntax", "unknown-job-key", "unknown-stage", "no-input-match", "tile-size-tiny",
             "tile-size-negative", "dtm-resolution-tiny", "max-tiles-flag", "max-tile-cells-flag", "max-tiles-zero",
             "folder-up", "folder-absolute", "ndsm-folder-up", "bad-crs-flag", "readers-after-tile",
             "tile-size-inf", "resolution-nan", "area-nan", "area-inverted", "missing-job-file"]


@pytest.mark.parametrize("case", JOB_CASES)
def test_bad_job(case: str, points: Path, tmp_path: Path, sandbox) -> None:
    out = tmp_path / "o" / "out"
    args, names = _job_case(case, tmp_path, points, out)
    assert_refused(sandbox(*args, out=out), *names)
    assert_no_products(out)
    assert not (tmp_path / "x").exists() and not (tmp_path / "abs").exists()


def test_crs_contradicting_coordinates_is_refused_for_3d_tiles(points: Path, tmp_path: Path, sandbox) -> None:
    """Delft RD coordinates declared as ETRS89 / UTM 32N + DHHN2016 (outside its area of use, no height grid
    there) with a 3D Tiles stage: refused before work, naming --crs."""
    out = tmp_path / "out"
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, points, extra='[[stages]]\ntype = "tiles.pointcloud"\n'))
    result = sandbox("run", str(job), "--crs", "EPSG:25832+7837", "--scheduler", "threads", out=out)
    assert_refused(result, points.name, "area of use", "--crs")
    assert_no_products(out)


def test_crs_contradicting_coordinates_warns_for_2d_products(points: Path, tmp_path: Path, sandbox) -> None:
    """The same file in a job of LAS tiles only (no heights transformed): it runs, and says it doubts the CRS."""
    out = tmp_path / "out"
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, points))
    result = sandbox("run", str(job), "--crs", "EPSG:25832+7837", "--scheduler", "threads", out=out)
    assert result.returncode == 0, result.stderr
    assert "outside the area of use" in result.stderr and points.name in result.stderr and not result.strays


def test_info_warns_on_crs_outside_area(points: Path, sandbox) -> None:
    result = sandbox("info", str(points), "--crs", "EPSG:25832")
    assert result.returncode == 0 and "outside the area of use" in result.stdout and not result.strays


def test_second_run_on_a_locked_folder_names_the_holder(points: Path, tmp_path: Path, sandbox) -> None:
    """A second run is refused naming the pid that holds the folder; once that process dies (kill -9), its lock
    is taken over without cleaning up."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, points, size=0.0001, buffer=0.0))  # refused at planning: the lock is not the error
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from cim import outlock; outlock.acquire(Path(sys.argv[1])); print('held', flush=True);"
                               " time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_refused(sandbox("run", str(job), out=out), str(out), f"process {holder.pid} on ", "in use")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    line = assert_refused(sandbox("run", str(job), out=out), "stages[1].size")  # the lock was taken over
    assert "in use" not in line


def test_out_is_a_file(points: Path, tmp_path: Path, sandbox) -> None:
    out = tmp_path / "out"
    out.write_text("I am a file")
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, points))
    assert_refused(sandbox("run", str(job), out=out), "out")
    assert out.read_text() == "I am a file"


def test_unicode_paths_run_end_to_end(tmp_path: Path, sandbox) -> None:
    """A good job whose data, job file and output folder have non-ASCII names runs, and writes only inside --out."""
    folder = tmp_path / "Dätén 東京 ø"
    folder.mkdir()
    points = write_points(folder / "pünkte.las")
    out = folder / "aus gabe"
    job = folder / "jöb.toml"
    job.write_text(job_text(out, points), encoding="utf-8")
    result = sandbox("run", str(job), "--scheduler", "threads", out=out)
    assert result.returncode == 0, result.stderr
    assert not result.strays and "Traceback" not in result.stderr
    assert sorted(p.name for p in (out / "las").glob("*.laz"))


def test_shipped_delft_file_passes_the_guards(sandbox) -> None:
    """The real AHN3 tile goes through every header guard (no false alarm on real data)."""
    result = sandbox("info", str(REPO / "data" / "delft" / "ahn3_cropped_2.laz"), "--crs", "EPSG:7415")
    assert result.returncode == 0, result.stderr


def test_truncated_panorama_is_refused_before_work(synth_city, tmp_path: Path, sandbox) -> None:
    """One JPEG of the synthetic drive cut to 40 %: OpenCV would decode it grey without a word; ``cim panoramas``
    refuses it before any panorama is processed."""
    images = tmp_path / "data" / "images"
    shutil.copytree(synth_city.panorama_dir, images)
    victim = sorted(images.glob("*.jpg"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size * 4 // 10])
    out = tmp_path / "out"
    result = sandbox("panoramas", str(synth_city.poses_csv), "--images", str(images), "--out", str(out),
                     "--scheduler", "threads", out=out)
    assert_refused(result, victim.name, "truncated")
    assert not (out / "panoramas").exists()


def test_cim_dtm_with_a_tiny_resolution_is_refused(points: Path, tmp_path: Path, sandbox) -> None:
    """``cim dtm --resolution 0.001`` used to allocate 466 GiB at run time; now refused at planning."""
    out = tmp_path / "out"
    result = sandbox("dtm", str(points), "--out", str(out), "--resolution", "0.001", "--workers", "1", out=out)
    assert_refused(result, "resolution", "max-tile-cells")
    assert_no_products(out)


def test_cim_dtm_on_worker_processes_writes_only_inside_out(points: Path, tmp_path: Path, sandbox) -> None:
    """``cim dtm`` on a local cluster of worker processes: Dask's scratch space lands in ``<out>/.cim/dask``, not
    in ``$TMPDIR`` or the working directory."""
    out = tmp_path / "out"
    result = sandbox("dtm", str(points), "--out", str(out), "--resolution", "2", "--classify", "never",
                     "--workers", "1", out=out, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not result.strays and (out / "dtm.vrt").is_file() and (out / ".cim" / "dask").is_dir()


def test_a_stage_folder_linked_outside_is_refused(points: Path, tmp_path: Path, sandbox) -> None:
    """``<out>/las`` is a symbolic link to a folder elsewhere: refused at planning, nothing written there."""
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "las").symlink_to(elsewhere, target_is_directory=True)
    job = tmp_path / "job.toml"
    job.write_text(job_text(out, points))
    assert_refused(sandbox("run", str(job), "--scheduler", "threads", out=out), "stages[2].folder", str(elsewhere))
    assert not list(elsewhere.iterdir())
