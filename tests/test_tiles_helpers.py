"""Helpers for the 3D Tiles tests: a small synthetic Kaiserslautern cloud, schema and glTF validation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import cim
from cim.points import PointCloud

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas" / "3d-tiles-1.1"
JS = HERE / "js"
KL_CRS = "EPSG:25832+7837"
CONTROL = (410800.0, 5479700.0, 235.0)  # DHHN2016 height 235 m -> 283.697 m ellipsoidal (GCG2016)
CONTROL_ELLIPSOIDAL = 283.697


def synthetic_cloud(n: int = 120_000, seed: int = 7) -> PointCloud:
    """Ground, two box buildings and trees around the control point; 8-bit colours in 16-bit fields.

    Spans 3 x 3 tiles of 100 m; point 0 is the control point itself. ``point_id`` is a unique extra dimension.
    """
    rng = np.random.default_rng(seed)
    x0, y0 = 410740.0, 5479640.0
    n_ground = n // 2
    gx = x0 + rng.random(n_ground) * 180
    gy = y0 + rng.random(n_ground) * 180
    gz = 235.0 + 0.02 * (gx - 410800) + 0.01 * (gy - 5479700) + rng.normal(0, 0.03, n_ground)
    nb = n - n_ground
    bx = np.where(rng.random(nb) < 0.5, 410770.0, 410850.0) + rng.random(nb) * 40
    by = 5479690.0 + rng.random(nb) * 30
    roof = np.where(bx < 410830, 250.0, 262.0)
    wall = rng.random(nb) < 0.4
    bz = np.where(wall, 235.0 + rng.random(nb) * (roof - 235.0), roof + 0.3 * (by - 5479705.0) / 15)
    x = np.concatenate([gx, bx])
    y = np.concatenate([gy, by])
    z = np.concatenate([gz, bz])
    x[0], y[0], z[0] = CONTROL
    cls = np.concatenate([np.full(n_ground, 2, np.uint8), np.full(nb, 6, np.uint8)])
    red = np.where(cls == 2, 90, 200).astype(np.uint16) + rng.integers(0, 40, n).astype(np.uint16)
    green = np.where(cls == 2, 140, 60).astype(np.uint16) + rng.integers(0, 40, n).astype(np.uint16)
    blue = rng.integers(0, 256, n).astype(np.uint16)
    nret = rng.integers(1, 4, n).astype(np.uint8)
    data = {
        "x": x, "y": y, "z": z,
        "intensity": rng.integers(0, 4096, n).astype(np.uint16),
        "classification": cls,
        "return_number": np.minimum(rng.integers(1, 4, n), nret).astype(np.uint8),
        "number_of_returns": nret,
        "gps_time": 1.4e9 + np.sort(rng.random(n)) * 600.0,
        "red": red, "green": green, "blue": blue,
        "point_id": np.arange(n, dtype=np.uint32),
    }
    return PointCloud(data, cim.crs.resolve(KL_CRS))


# -- JSON schemas --------------------------------------------------------------------------------------------

def _registry():
    from referencing import Registry, Resource

    roots = [SCHEMAS / "schema", SCHEMAS / "gltf" / "schema"]
    roots += sorted((SCHEMAS / "gltf" / "extensions").glob("*/schema"))

    def retrieve(uri: str):
        name = uri.split("schemas.test/", 1)[1]
        for root in roots:
            candidate = root / name
            if candidate.is_file():
                return Resource.from_contents(json.loads(candidate.read_text()))
        raise LookupError(uri)

    return Registry(retrieve=retrieve)


def schema_errors(document: dict, schema_name: str) -> list[str]:
    """Messages of every violation of ``schema_name`` (e.g. 'tileset.schema.json') by ``document``."""
    from jsonschema import Draft202012Validator

    registry = _registry()
    schema = registry.get_or_retrieve(f"https://schemas.test/{schema_name}").value.contents
    validator = Draft202012Validator({"$ref": f"https://schemas.test/{schema_name}"}, registry=registry)
    del schema
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


# -- glTF validator ------------------------------------------------------------------------------------------

def gltf_validator_available() -> bool:
    return shutil.which("node") is not None and (JS / "node_modules" / "gltf-validator").is_dir()


def require_gltf_validator() -> None:
    if not gltf_validator_available():
        pytest.skip("Khronos gltf-validator not installed: run `npm ci --prefix tests/js` (needs node)")


def validate_glbs(paths: list[Path]) -> list[dict]:
    """One report per file from the Khronos glTF validator (tests/js/validate_gltf.mjs)."""
    reports = []
    for start in range(0, len(paths), 200):
        batch = [str(p) for p in paths[start:start + 200]]
        proc = subprocess.run(["node", str(JS / "validate_gltf.mjs"), *batch], capture_output=True, text=True,
                              timeout=300)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == len(batch), proc.stderr[-2000:]
        reports += lines
    return reports


# -- meshopt (meshoptimizer's JavaScript decoder, as CesiumJS uses it) ---------------------------------------

def decode_meshopt_js(paths: list[Path]) -> list[dict]:
    """Per file: the decoded bytes of every EXT_meshopt_compression view and each stream's header byte."""
    if shutil.which("node") is None or not (JS / "node_modules" / "meshoptimizer").is_dir():
        pytest.skip("meshoptimizer (npm) not installed: run `npm ci --prefix tests/js` (needs node)")
    proc = subprocess.run(["node", str(JS / "decode_meshopt.mjs"), *map(str, paths)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
