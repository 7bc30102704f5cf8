"""Fingerprints cover what a task depends on: the contents of the files its options name (hashed once, cached
by inode, size and mtime) and the code of the cim modules its stage imports."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from cim.pipeline.execute import JobRun, run_job
from cim.pipeline.job import load_job
from cim.runner import fingerprints
from cim.runner.fingerprints import CodeHashes, ContentHashes
from tests.helpers import REPO, delft_job, product_digests, write_job

STAGES = """
[[stages]]
type = "buildings.lod1"
footprints = "{footprints}"

[[stages]]
type = "raster.dsm"
resolution = 2.0
"""


@pytest.fixture()
def job(tmp_path: Path) -> Path:
    footprints = tmp_path / "bgt_pand.sqlite"
    shutil.copy(REPO / "data" / "delft" / "bgt_pand.sqlite", footprints)
    files = (REPO / "data" / "delft" / "ahn3_cropped_2.laz").as_posix()
    body = delft_job(tmp_path / "o", extra=STAGES.format(footprints=footprints.as_posix()), files=files)
    return write_job(tmp_path / "job.toml", body)


def _run(job: Path) -> JobRun:
    return run_job(load_job(job), scheduler="threads", workers=2)


def _rerun(run: JobRun) -> set[str]:
    """The stages that did work (tile steps or finishes) in ``run``."""
    return {o.stage for o in run.report.outcomes.values() if o.status == "done" and o.stage not in ("tile.io",)}


def test_same_size_content_change_of_an_option_file_reruns_exactly_its_stage(job: Path, tmp_path: Path) -> None:
    first = _run(job)
    assert first.report.ok and {"buildings.lod1", "raster.dsm", "write.las"} <= _rerun(first)
    footprints = tmp_path / "bgt_pand.sqlite"
    size = footprints.stat().st_size
    os.utime(footprints, ns=(0, 10**18))  # a new mtime alone (a copy, a touch): contents unchanged, nothing runs
    assert _rerun(_run(job)) == set()
    with sqlite3.connect(footprints) as db:
        db.execute("PRAGMA user_version = 7")  # rewrites the header page: same name, same size, new contents
    assert footprints.stat().st_size == size
    changed = _run(job)
    assert _rerun(changed) == {"buildings.lod1", "catalog"}
    steps = [o for o in changed.report.outcomes.values() if o.stage == "buildings.lod1"]
    per_tile = [o for o in steps if "/block/" not in o.key and not o.key.endswith("/summary")]  # not its blocks
    assert {o.status for o in steps} == {"done"} and len(per_tile) == changed.tiles + 1  # every tile and the finish


def test_code_edit_reruns_the_stages_that_import_it_and_no_other(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(job).report.ok
    real = fingerprints.module_source

    def edited(module: str) -> bytes:
        def source(name: str) -> bytes:
            return real(name) + (b"\n# edited\n" if name == module else b"")
        return source

    monkeypatch.setattr(fingerprints, "module_source", edited("cim.panoramas.colorize"))  # no stage here imports it
    assert _rerun(_run(job)) == set()
    monkeypatch.setattr(fingerprints, "module_source", edited("cim.buildings.planes"))  # buildings imports it
    assert _rerun(_run(job)) == {"buildings.lod1", "catalog"}
    monkeypatch.setattr(fingerprints, "module_source", edited("cim.points"))  # every stage imports it
    assert {"buildings.lod1", "raster.dsm", "write.las", "tile"} <= _rerun(_run(job))


def test_code_hash_follows_imports_within_cim_only() -> None:
    closure = CodeHashes().closure("cim.stages.terrain")
    assert {"cim.terrain.ground", "cim.pipeline.stage", "cim.points", "cim.tiling"} <= set(closure)
    assert not any(m.startswith(("cim.buildings", "cim.panoramas", "cim.pipeline.execute")) for m in closure)
    assert all(m.startswith("cim") for m in closure)


def test_content_hashes_are_cached_by_inode_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * 1000)
    cache = tmp_path / "hashes.json"
    hashes = ContentHashes(cache)
    first = hashes.digest(path)
    hashes.save()
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"b")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same inode, size and mtime: not read again
    assert ContentHashes(cache).digest(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert ContentHashes(cache).digest(path) != first


def _write_dtm(path: Path, height: float) -> None:
    """An uncompressed 1 m DTM over the Delft file (so rewriting it with another height keeps its size)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    values = np.full((240, 80), height, dtype="float32")
    with rasterio.open(path, "w", driver="GTiff", width=80, height=240, count=1, dtype="float32", crs="EPSG:28992",
                       transform=from_origin(84995.0, 447645.0, 1.0, 1.0), nodata=-9999.0) as ds:
        ds.write(values, 1)


def test_same_size_content_change_of_a_dtm_input_reruns_the_stage_that_reads_it(tmp_path: Path) -> None:
    dtm = tmp_path / "dtm.tif"
    _write_dtm(dtm, 0.0)
    files = (REPO / "data" / "delft" / "ahn3_cropped_2.laz").as_posix()
    stages = STAGES.format(footprints=(REPO / "data" / "delft" / "bgt_pand.sqlite").as_posix())
    stages = stages.replace('type = "buildings.lod1"', f'type = "buildings.lod1"\ndtm = "{dtm.as_posix()}"')
    job = write_job(tmp_path / "job.toml", delft_job(tmp_path / "o", extra=stages, files=files))
    assert _run(job).report.ok
    before = product_digests(tmp_path / "o")
    size = dtm.stat().st_size
    _write_dtm(dtm, 0.25)
    assert dtm.stat().st_size == size
    assert _rerun(_run(job)) == {"buildings.lod1", "catalog"}
    after = product_digests(tmp_path / "o")
    changed = {k for k in before if before[k] != after.get(k)}
    assert any(k.startswith("buildings/") for k in changed)  # read again, not from a cache of the old DTM
    assert not any(k.startswith(("dsm/", "las/")) for k in changed)


def _fresh_parse_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if it had parsed nothing yet and read no cache file."""
    monkeypatch.setattr(fingerprints, "_PARSED", {})
    monkeypatch.setattr(fingerprints, "_LOADED", set())


def test_code_hash_from_the_parse_cache_equals_a_fresh_parse_and_follows_edits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / ".cim" / fingerprints.CODE_IMPORTS  # a job's work folder
    _fresh_parse_cache(monkeypatch)
    parsed = CodeHashes(cache)
    fresh = parsed.code_hash("cim.stages.tiles"), parsed.closure("cim.stages.tiles")
    assert cache.is_file()
    _fresh_parse_cache(monkeypatch)  # a new process: every source from the cache, none parsed

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed although the cache has the source")

    monkeypatch.setattr(fingerprints.ast, "parse", no_parse)
    cached = CodeHashes(cache)
    assert (cached.code_hash("cim.stages.tiles"), cached.closure("cim.stages.tiles")) == fresh
    monkeypatch.undo()

    real = fingerprints.module_source
    _fresh_parse_cache(monkeypatch)

    def edited(name: str) -> bytes:  # an edit that adds an import: a source the cache has not seen
        extra = b"\nfrom cim.terrain import ground\n" if name == "cim.tiles3d.lod" else b""
        return real(name) + extra

    monkeypatch.setattr(fingerprints, "module_source", edited)
    after = CodeHashes(cache)
    assert after.code_hash("cim.stages.tiles") != fresh[0]
    assert "cim.terrain.ground" in set(after.closure("cim.stages.tiles")) - set(fresh[1])


def test_a_damaged_parse_cache_only_costs_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / fingerprints.CODE_IMPORTS
    _fresh_parse_cache(monkeypatch)
    expected = CodeHashes(cache).code_hash("cim.stages.terrain")
    cache.write_text('{"not": "json')
    _fresh_parse_cache(monkeypatch)
    assert CodeHashes(cache).code_hash("cim.stages.terrain") == expected
    _fresh_parse_cache(monkeypatch)
    (tmp_path / "missing").write_text("a file where the cache folder would be")  # cannot be written: no error
    assert CodeHashes(tmp_path / "missing" / "folder" / "c.json").code_hash("cim.stages.terrain") == expected


def test_item_stages_do_not_hash_the_runner_they_take_their_base_class_from(monkeypatch: pytest.MonkeyPatch) -> None:
    closure = CodeHashes().closure("cim.stages.panorama_publish")
    assert {"cim.panoramas.process", "cim.panoramas.tiles", "cim.pipeline.stage"} <= set(closure)
    assert not {"cim.pipeline.items", "cim.catalog", "cim.runner.tasks", "cim.pipeline.execute"} & set(closure)
    before = CodeHashes().code_hash("cim.stages.panorama_publish")
    real = fingerprints.module_source

    def edited(module: str):  # noqa: ANN202
        return lambda name: real(name) + (b"\n# edited\n" if name == module else b"")

    for runner in ("cim.pipeline.items", "cim.catalog"):
        monkeypatch.setattr(fingerprints, "module_source", edited(runner))
        assert CodeHashes().code_hash("cim.stages.panorama_publish") == before
    monkeypatch.setattr(fingerprints, "module_source", edited("cim.panoramas.tiles"))
    assert CodeHashes().code_hash("cim.stages.panorama_publish") != before
