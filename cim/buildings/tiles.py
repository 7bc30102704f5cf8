"""3D Tiles 1.1 of building models: one glb per square tile of buildings (owned by their representative point),
triangulated faces with flat normals, ``EXT_mesh_features`` feature ids and ``EXT_structural_metadata`` attributes,
placed on the globe with the same local ENU frame machinery as the point-cloud tiles (``cim.tiles3d``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyproj

from cim.buildings.mesh import triangulate
from cim.buildings.model import BuildingModel
from cim.fileutil import atomic_dir, write_bytes_atomic
from cim.tiles3d.glb import mesh_glb
from cim.tiles3d.placement import LocalFrame
from cim.tiles3d.tileset import Tile, write_tileset

#: float attributes without a value are written as this number (EXT_structural_metadata noData is not used)
NO_VALUE = -9999.0
FLOAT_PROPERTIES = ("h_ground", "h_lod12", "h_eaves", "h_ridge", "h_roof_70p", "rmse_lod12", "rmse_lod22",
                    "point_density", "coverage", "footprint_area")
INT_PROPERTIES = ("roof_type", "point_count", "n_planes")
STRING_PROPERTIES = ("status", "roof_type_name")


def _properties(models: Sequence[BuildingModel]) -> dict[str, np.ndarray | list]:
    props: dict[str, np.ndarray | list] = {"id": [m.id for m in models],
                                           "lod": [m.best.lod for m in models]}
    for name in FLOAT_PROPERTIES:
        vals = [m.attributes.get(name) for m in models]
        props[name] = np.array([NO_VALUE if v is None else float(v) for v in vals], dtype=np.float64)
    for name in INT_PROPERTIES:
        vals = [m.attributes.get(name) for m in models]
        props[name] = np.array([0 if v is None else int(v) for v in vals], dtype=np.int32)
    for name in STRING_PROPERTIES:
        props[name] = ["" if m.attributes.get(name) is None else str(m.attributes[name]) for m in models]
    return props


def _tile_mesh(solids: Sequence[Sequence[np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions, triangles, normals, feature id per vertex) of the faces of all ``solids``, triangulated in one
    call; a solid without any triangle is left out (its feature id stays unused)."""
    faces = [f for solid in solids for f in solid]
    sizes = np.array([len(f) for f in faces], dtype=np.int64)
    solid_of_face = np.repeat(np.arange(len(solids)), [len(solid) for solid in solids])
    mesh = triangulate(faces)
    shown = np.zeros(len(solids), bool)
    shown[solid_of_face[mesh.face]] = True
    fid = np.repeat(solid_of_face[sizes >= 3], sizes[sizes >= 3])  # triangulate keeps the faces of 3+ vertices
    keep = shown[fid]
    row = np.cumsum(keep) - 1
    return mesh.positions[keep], row[mesh.triangles], mesh.normals[keep], fid[keep]


def building_glb(models: Sequence[BuildingModel], frame: LocalFrame) -> tuple[bytes, np.ndarray, np.ndarray] | None:
    """(glb bytes, local box lo, hi) of buildings in one tile; None when none has a geometry."""
    shown = [m for m in models if m.best is not None]
    world, tri, nrm, fid = _tile_mesh([m.best.faces for m in shown])
    if len(tri) == 0:
        return None
    local = frame.to_local(world[:, 0], world[:, 1], world[:, 2])
    # normals: rotate with the local frame's Jacobian, approximated at the tile centre by finite differences
    probe = world.mean(axis=0) + np.vstack([np.zeros(3), np.eye(3)])  # the centre and one metre along each axis
    moved = frame.to_local(probe[:, 0], probe[:, 1], probe[:, 2])
    jac = (moved[1:] - moved[0]).T
    normals = nrm @ np.linalg.inv(jac)  # covariant transform of normals
    data = mesh_glb(local, tri.astype(np.uint32), normals, fid,
                    _properties(shown), class_name="building")
    return data, local.min(axis=0), local.max(axis=0)


def write_building_tiles(
    out_dir: str | Path,
    models: Sequence[BuildingModel],
    crs: pyproj.CRS | str,
    *,
    tile_size: float = 250.0,
    origin: Sequence[float] | None = None,
) -> Path:
    """Write ``<out_dir>/tileset.json`` and ``<out_dir>/tiles/<col>_<row>.glb`` (atomic folder); returns the
    tileset path. Buildings go to the grid square of their footprint's representative point."""
    out_dir = Path(out_dir)
    models = [m for m in models if m.best is not None]
    if not models:
        raise ValueError("no building geometry to tile")
    allv = np.concatenate([m.best.vertices for m in models])
    if origin is None:
        lo = allv.min(axis=0)
        hi = allv.max(axis=0)
        origin = (math.floor((lo[0] + hi[0]) / 2), math.floor((lo[1] + hi[1]) / 2), math.floor(lo[2]))
    frame = LocalFrame.from_crs(crs, tuple(origin))
    groups: dict[tuple[int, int], list[BuildingModel]] = {}
    for m in models:
        rp = m.footprint.representative_point()
        key = (math.floor(rp.x / tile_size), math.floor(rp.y / tile_size))
        groups.setdefault(key, []).append(m)
    children = []
    with atomic_dir(out_dir) as tmp:
        for key in sorted(groups):
            res = building_glb(groups[key], frame)
            if res is None:
                continue
            data, lo, hi = res
            uri = f"tiles/{key[0]}_{key[1]}.glb"
            write_bytes_atomic(tmp / uri, data)
            children.append(Tile(lo, hi, 0.0, content_uri=uri))
        lo = np.min([c.lo for c in children], axis=0)
        hi = np.max([c.hi for c in children], axis=0)
        root = Tile(lo, hi, tile_size / 2, children=children, refine="ADD", transform=frame.ecef_from_local)
        write_tileset(tmp / "tileset.json", root, tile_size)
    return out_dir / "tileset.json"
