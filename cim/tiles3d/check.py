"""Checks of a written tileset that the official validators do not make.

* every child's box lies inside its parent's box (after the child's transform),
* geometric errors strictly decrease from parent to child (an external tileset's root continues the tile that
  links it, so it may repeat that tile's error),
* every point of a content lies inside its tile's box,
* point counts and per-property sums (to prove no point was lost or duplicated), ECEF positions on request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cim.tiles3d.glb import apply_affine, decode_points, read_glb
from cim.tiles3d.implicit import expand_implicit

_TOL = 1e-6


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    points: int = 0
    tiles: int = 0
    contents: int = 0
    skipped: int = 0  # contents in other formats (pnts, b3dm, ...), not decoded
    sums: dict[str, float] = field(default_factory=dict)
    ecef: list[np.ndarray] = field(default_factory=list)
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _box(tile: dict) -> tuple[np.ndarray, np.ndarray]:
    box = tile["boundingVolume"]["box"]
    return np.asarray(box[:3], float), np.asarray(box[3:], float).reshape(3, 3)


def _corners(centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    return centre + signs @ axes


def _inside(points: np.ndarray, centre: np.ndarray, axes: np.ndarray, tol: float = _TOL) -> np.ndarray:
    """Mask of points inside an oriented box (tolerance in metres along each axis)."""
    lengths = np.linalg.norm(axes, axis=1)
    units = axes / np.where(lengths > 0, lengths, 1)[:, None]
    to_box = np.eye(4)
    to_box[:3, :3] = units
    to_box[:3, 3] = -units @ centre
    u = apply_affine(to_box, points)
    return np.all(np.abs(u) <= lengths + tol, axis=1)


def _transform(tile: dict) -> np.ndarray:
    t = tile.get("transform")
    return np.eye(4) if t is None else np.asarray(t, float).reshape(4, 4).T


def check_tileset(path: str | Path, *, keep_values: bool = False, keep_ecef: bool = False) -> CheckReport:
    """Walk ``path`` (and its external tilesets) and check the invariants; decode every point content."""
    report = CheckReport()
    path = Path(path)
    doc = json.loads(path.read_text())
    _walk(doc["root"], path.parent, np.eye(4), None, None, report, keep_values, keep_ecef, str(path.name))
    return report


def _walk(tile: dict, base: Path, parent_world: np.ndarray, parent: dict | None, parent_error: float | None,
          report: CheckReport, keep_values: bool, keep_ecef: bool, where: str, external_root: bool = False) -> None:
    if "implicitTiling" in tile:
        tile = expand_implicit(tile, base)
    report.tiles += 1
    local = _transform(tile)
    world = parent_world @ local
    centre, axes = _box(tile)
    error = float(tile["geometricError"])
    if parent is not None:
        pc, pa = _box(parent)
        corners = _corners(centre, axes) @ local[:3, :3].T + local[:3, 3]
        if not _inside(corners, pc, pa, 1e-4).all():
            report.problems.append(f"{where}: box not inside its parent's box")
    if parent_error is not None:
        if external_root and error > parent_error:
            report.problems.append(f"{where}: external root error {error} above the linking tile's {parent_error}")
        if not external_root and not error < parent_error:
            report.problems.append(f"{where}: geometric error {error} not below its parent's {parent_error}")
    content = tile.get("content")
    if content:
        uri = content["uri"]
        target = base / uri
        if not target.is_file():
            report.problems.append(f"{where}: content {uri} is missing")
        elif uri.endswith(".json"):
            sub = json.loads(target.read_text())
            _walk(sub["root"], target.parent, world, tile, error, report, keep_values, keep_ecef,
                  f"{uri}:root", external_root=True)
        elif uri.endswith(".glb"):
            _check_points(target, centre, axes, world, report, keep_values, keep_ecef, where)
        else:
            report.skipped += 1
    for i, child in enumerate(tile.get("children", [])):
        _walk(child, base, world, tile, error, report, keep_values, keep_ecef, f"{where}/{i}")


def _check_points(glb: Path, centre: np.ndarray, axes: np.ndarray, world: np.ndarray, report: CheckReport,
                  keep_values: bool, keep_ecef: bool, where: str) -> None:
    data = glb.read_bytes()
    gltf_json = read_glb(data)[0]
    if gltf_json["meshes"][0]["primitives"][0].get("mode", 4) != 0:  # not points: only the box is checked
        report.skipped += 1
        return
    local, attrs, gltf = decode_points(data)
    report.contents += 1
    report.points += len(local)
    outside = ~_inside(local, centre, axes)
    if outside.any():
        report.problems.append(f"{where}: {int(outside.sum())} points of {glb.name} outside the tile box")
    meta = gltf.get("extensions", {}).get("EXT_structural_metadata", {})
    for pattr in meta.get("propertyAttributes", []):
        for name, spec in pattr["properties"].items():
            raw = attrs[spec["attribute"]][:, 0].astype(np.float64)
            values = raw * spec.get("scale", 1.0) + spec.get("offset", 0.0)
            report.sums[name] = report.sums.get(name, 0.0) + float(values.sum())
            if keep_values:
                report.values.setdefault(name, []).append(values)
    if keep_ecef:
        report.ecef.append(apply_affine(world, local))
