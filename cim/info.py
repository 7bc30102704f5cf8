"""Facts about a LAS/LAZ/COPC file, in the spirit of ``pdal info``: header, CRS and statistics of the points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim import crs as crs_mod
from cim.guards import area_of_use_problem
from cim.io import las

_DENSITY_CELL = 1.0  # metres: occupied-cell density is measured on this grid


def _crs_facts(source: las.LasSource) -> dict[str, Any]:
    crs = source.crs
    if crs is None:
        return {"source": "none", "horizontal": None, "vertical": None, "wkt": None}
    vertical = crs_mod.vertical_part(crs)
    return {
        "source": source.crs_source,
        "code": crs_mod.code(crs),
        "name": crs.name,
        "horizontal": crs_mod.describe(crs_mod.horizontal_part(crs)),
        "vertical": crs_mod.describe(vertical) if vertical is not None else None,
        "units": crs_mod.horizontal_part(crs).axis_info[0].unit_name,
        "wkt": crs.to_wkt(),
    }


def _occupied_cells(x: np.ndarray, y: np.ndarray, source: las.LasSource) -> np.ndarray:
    """Unique ids of the density cells the points fall in (cells of _DENSITY_CELL metres from the header min)."""
    cell = _DENSITY_CELL / (crs_mod.linear_unit_factor(source.crs) if source.crs else 1.0)
    b = source.bounds
    columns = int((b.maxx - b.minx) / cell) + 2
    ix = np.clip(np.floor((x - b.minx) / cell), 0, columns - 1).astype(np.int64)
    iy = np.maximum(np.floor((y - b.miny) / cell), 0).astype(np.int64)
    return np.unique(iy * columns + ix)


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def file_info(path: str | Path, crs: str | pyproj.CRS | None = None) -> dict[str, Any]:
    """Everything ``cim info`` reports about one file, as a JSON-able dict."""
    source = las.open_source(path, crs)
    header = source.header
    classes = np.zeros(256, dtype=np.int64)
    returns = np.zeros(16, dtype=np.int64)
    gps = [np.inf, -np.inf]
    cells: set[int] = set()
    mins = np.full(3, np.inf)
    maxs = np.full(3, -np.inf)
    count = 0
    for chunk in las.iter_chunks(path, crs=crs):
        count += len(chunk)
        if len(chunk) == 0:
            continue
        xyz = chunk.xyz
        mins, maxs = np.minimum(mins, xyz.min(axis=0)), np.maximum(maxs, xyz.max(axis=0))
        if chunk.has("classification"):
            classes += np.bincount(chunk["classification"], minlength=256)[:256]
        if chunk.has("return_number"):
            returns += np.bincount(np.minimum(chunk["return_number"], 15), minlength=16)
        if chunk.has("gps_time"):
            gps = [min(gps[0], float(chunk["gps_time"].min())), max(gps[1], float(chunk["gps_time"].max()))]
        cells.update(_occupied_cells(chunk.x, chunk.y, source).tolist())
    area = float((maxs[0] - mins[0]) * (maxs[1] - mins[1])) if count else 0.0
    unit = crs_mod.linear_unit_factor(source.crs) if source.crs else 1.0
    warnings_ = [w for w in [area_of_use_problem(source)] if w]
    return {
        "file": str(source.path),
        "format": "COPC" if source.is_copc else ("LAZ" if header.are_points_compressed else "LAS"),
        "version": str(header.version),
        "point_format": header.point_format.id,
        "point_count": count,
        "header_point_count": source.point_count,
        "dimensions": list(header.point_format.dimension_names),
        "extra_dimensions": list(header.point_format.extra_dimension_names),
        "scale": [float(v) for v in header.scales],
        "offset": [float(v) for v in header.offsets],
        "bounds": {"min": [float(v) for v in mins], "max": [float(v) for v in maxs]} if count else None,
        "crs": _crs_facts(source),
        "classification": {str(c): int(n) for c, n in enumerate(classes) if n},
        "returns": {str(r): int(n) for r, n in enumerate(returns) if n},
        "gps_time": gps if count and np.isfinite(gps[0]) else None,
        "gps_time_type": "adjusted standard (read as GPS seconds)" if source.adjusted_gps_time else "GPS week seconds",
        "density": {
            "bbox_points_per_m2": _sig(count / (area * unit * unit)) if area else None,
            "occupied_points_per_m2": _sig(count / (len(cells) * _DENSITY_CELL**2)) if cells else None,
        },
        "creation_date": header.creation_date.isoformat() if header.creation_date else None,
        "software": header.generating_software.strip("\x00 "),
        "warnings": warnings_,
    }
