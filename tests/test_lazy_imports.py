"""Stage modules are light to import (the driver imports them to validate a job's options); what their work needs is
imported by the methods that run it and named in ``Stage.worker_imports``, which the worker processes import once
(``worker_modules``); and the code hash of a stage still follows those function-local imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from cim.pipeline.stage import lookup, stage_module, stage_names, worker_modules
from cim.runner.fingerprints import CodeHashes, module_source
from tests.helpers import REPO

#: Libraries that cost 0.05-0.5 s each to import and that no stage needs to validate its options.
HEAVY = ("scipy", "rasterio", "open3d", "shapely", "cv2", "lxml", "pyogrio", "PIL", "trimesh", "pyvista")

#: The stages of the scale benchmark's terrain job (benchmarks/scale/jobs.py).
TERRAIN_JOB = ("read.las", "tile", "filter.outliers", "classify.ground", "classify.objects", "raster.dtm",
               "raster.dsm")

_HEAVY_NOW = f"sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))"


def _run(code: str) -> object:
    """Run ``code`` in a fresh interpreter; the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", f"import importlib, json, sys\n{code}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stage_modules() -> list[str]:
    return sorted({module for name in stage_names() if (module := stage_module(name))})


def test_every_stage_module_imports_no_heavy_library() -> None:
    # one interpreter imports the stage modules one after the other: a heavy library is charged to the first module
    # after which it appears (each module checked as if alone, as the earlier ones imported none)
    modules = _stage_modules()
    assert {"cim.stages.terrain", "cim.stages.buildings", "cim.stages.citygml"} <= set(modules)
    found = _run(f"import cim.pipeline.stage\nfound = {{}}\nfor m in {modules!r}:\n"
                 f"    importlib.import_module(m)\n    found[m] = {_HEAVY_NOW}\nprint(json.dumps(found))")
    assert found == {m: [] for m in modules}


def test_worker_modules_of_the_terrain_job_hold_its_implementation() -> None:
    modules = worker_modules([*TERRAIN_JOB, "no.such.stage"])  # an unknown name is left to the job's validation
    assert {"cim.stages.io", "cim.stages.terrain", "cim.terrain.outliers", "cim.terrain.ground",
            "cim.terrain.objects", "cim.terrain.dtm", "cim.terrain.raster"} <= set(modules)
    assert modules == sorted(set(modules))
    heavy = _run(f"for m in {modules!r}:\n    importlib.import_module(m)\nprint(json.dumps({_HEAVY_NOW}))")
    assert {"scipy", "rasterio"} <= set(heavy)
    assert worker_modules(["read.las", "tile"]) == ["cim.stages.io"]


def _lazy_imports(module: str) -> list[str]:
    """The import statements inside the functions and methods of ``module``, as source lines."""
    tree = ast.parse(module_source(module))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    return sorted({ast.unparse(n) for f in functions for n in ast.walk(f)
                   if isinstance(n, ast.Import | ast.ImportFrom)})


@pytest.mark.parametrize("module", ["cim.stages.terrain", "cim.stages.buildings", "cim.stages.citygml",
                                    "cim.stages.terrain_tiles", "cim.stages.panoramas",
                                    "cim.stages.panorama_publish"])
def test_a_worker_that_imported_worker_modules_imports_nothing_more_for_a_task(module: str) -> None:
    # every import the methods of the module's stages run, after their worker_imports: no module of cim and no
    # heavy library is imported anew (the buildings stages' code hash, cim.runner, is taken in the driver at
    # planning, and workers have the runner already)
    names = [n for n in stage_names() if stage_module(n) == module]
    lazy = [line for line in _lazy_imports(module) if not line.startswith("from cim.runner")]
    assert lazy, module
    cim_now = "sorted(m for m in sys.modules if m.startswith('cim'))"
    code = (f"for m in {worker_modules(names)!r}:\n    importlib.import_module(m)\n"
            f"before = [{_HEAVY_NOW}, {cim_now}]\n"
            f"for line in {lazy!r}:\n    exec(line)\nprint(json.dumps([before, [{_HEAVY_NOW}, {cim_now}]]))")
    before, after = _run(code)
    assert after == before, (module, sorted(set(after[0]) - set(before[0])), sorted(set(after[1]) - set(before[1])))


def test_worker_imports_name_modules_of_cim() -> None:
    for name in stage_names():
        cls = lookup(name)
        assert all(m.startswith("cim.") and module_source(m) for m in cls.worker_imports), name


def test_the_code_hash_follows_imports_inside_functions() -> None:
    # cim.stages.terrain imports its implementation only inside methods: the closure must still hold it, or an edit
    # of the ground filter would not re-run classify.ground on resume
    lazy = {"cim.terrain.outliers", "cim.terrain.ground", "cim.terrain.objects", "cim.terrain.dtm",
            "cim.terrain.raster"}
    top = ast.parse(module_source("cim.stages.terrain")).body
    at_top = {n.module for n in top if isinstance(n, ast.ImportFrom)} | {a.name for n in top
                                                                         if isinstance(n, ast.Import)
                                                                         for a in n.names}
    assert not lazy & at_top  # imported lazily only
    closure = set(CodeHashes().closure("cim.stages.terrain"))
    assert lazy <= closure, sorted(lazy - closure)
    assert {"cim.buildings.run", "cim.buildings.large"} <= set(CodeHashes().closure("cim.stages.buildings"))
