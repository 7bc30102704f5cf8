"""Coordinate reference systems: parsing, the PROJ grids shipped with cim, exact 3D transformations, ENU frames.

Heights must be right. Every transformation to ellipsoidal heights goes through :func:`to_geographic3d`, which
refuses PROJ's "ballpark" vertical fallback (that silently treats DHHN2016 or NAP heights as ellipsoidal, an error
of ~48 m in Germany) unless the caller explicitly allows it, in which case it warns loudly.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pyproj
from pyproj.transformer import TransformerGroup

from cim.errors import CimWarning, CrsError

GEOGRAPHIC_3D = pyproj.CRS.from_epsg(4979)  # WGS 84 lon/lat/ellipsoidal height
ECEF = pyproj.CRS.from_epsg(4978)  # WGS 84 geocentric


def shipped_grid_dir() -> Path:
    """The folder of PROJ grids shipped inside the package (GCG2016, NLGEO2018, EGM96, BETA2007) and their licences."""
    return Path(str(resources.files("cim") / "data" / "proj"))


def register_shipped_grids() -> None:
    """Make PROJ find the grids shipped with cim (called once by ``import cim``)."""
    folder = str(shipped_grid_dir())
    if folder not in pyproj.datadir.get_data_dir().split(":"):
        pyproj.datadir.append_data_dir(folder)


def resolve(value: str | int | pyproj.CRS | None) -> pyproj.CRS | None:
    """A pyproj CRS from "EPSG:25832+7837", an EPSG code, WKT or PROJJSON; ``None`` stays ``None``."""
    if value is None or isinstance(value, pyproj.CRS):
        return value
    try:
        return pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError as exc:
        raise CrsError(f"not a coordinate reference system: {str(value)[:80]!r} ({exc})") from None


def horizontal_part(crs: pyproj.CRS) -> pyproj.CRS:
    """The horizontal (2D) component of a possibly compound CRS."""
    if crs.is_compound:
        return crs.sub_crs_list[0]
    return crs


def vertical_part(crs: pyproj.CRS) -> pyproj.CRS | None:
    """The vertical component of a compound or vertical CRS, ``None`` for a 2D CRS or 3D geographic CRS."""
    if crs.is_compound:
        return crs.sub_crs_list[1]
    if crs.is_vertical:
        return crs
    return None


def describe(crs: pyproj.CRS | None) -> str:
    """A short human label, e.g. 'EPSG:25832+7837 (ETRS89 / UTM zone 32N + DHHN2016 height)'."""
    if crs is None:
        return "none"
    return f"{code(crs) or 'custom'} ({crs.name})"


def code(crs: pyproj.CRS) -> str | None:
    """'EPSG:25832' or 'EPSG:25832+7837' when the CRS (or both its parts) have an EPSG code."""
    if crs.is_compound:
        parts = [p.to_epsg() for p in crs.sub_crs_list]
        return None if None in parts else "EPSG:" + "+".join(str(p) for p in parts)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else None


def linear_unit_factor(crs: pyproj.CRS) -> float:
    """Metres per horizontal unit (1.0 for metres, 0.3048 for international feet, ...)."""
    axis = horizontal_part(crs).axis_info[0]
    return float(axis.unit_conversion_factor or 1.0)


@lru_cache(maxsize=64)
def _to_geographic3d(wkt: str, allow_ballpark: bool) -> pyproj.Transformer:
    source = pyproj.CRS.from_wkt(wkt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        group = TransformerGroup(source, GEOGRAPHIC_3D, always_xy=True)
    if not group.transformers:
        raise CrsError(f"PROJ knows no transformation from {describe(source)} to WGS 84 3D")
    best = group.transformers[0]
    missing = "; ".join(str(w.message) for w in caught if "missing Grid" in str(w.message))
    has_vertical = vertical_part(source) is not None
    if has_vertical and "ballpark vertical" in best.description.lower():
        problem = (
            f"no exact vertical transformation from {describe(source)} to ellipsoidal heights "
            f"(PROJ would treat the heights as ellipsoidal, metres off)"
            + (f"; {missing}" if missing else "")
        )
        if not allow_ballpark:
            raise CrsError(problem + ". Give the heights' geoid grid to PROJ, or allow the ballpark explicitly.")
        warnings.warn(problem, CimWarning, stacklevel=3)
    if not has_vertical and not source.is_geographic:
        warnings.warn(
            f"{describe(source)} has no vertical CRS: heights are taken as ellipsoidal (WGS 84). "
            "Give a compound CRS such as EPSG:25832+7837 for orthometric heights.",
            CimWarning,
            stacklevel=3,
        )
    return best


@lru_cache(maxsize=64)
def _exact_transformer(source_wkt: str, target_wkt: str) -> pyproj.Transformer:
    source, target = pyproj.CRS.from_wkt(source_wkt), pyproj.CRS.from_wkt(target_wkt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        group = TransformerGroup(source, target, always_xy=True)
    if not group.transformers:
        raise CrsError(f"PROJ knows no transformation from {describe(source)} to {describe(target)}")
    best = group.transformers[0]
    grids = sorted({m for w in caught for m in re.findall(r"short_name=([^,)]+)", str(w.message))})
    if "ballpark" in best.description.lower() or not group.best_available:
        raise CrsError(
            f"no exact transformation from {describe(source)} to {describe(target)}: PROJ's best available is "
            f"'{best.description}'" + (f" (the exact one needs grid {', '.join(grids)})" if grids else "")
            + ". Install the grid for PROJ, or choose another output CRS."
        )
    return best


def exact_transformer(source: pyproj.CRS, target: pyproj.CRS) -> pyproj.Transformer:
    """Transformer from ``source`` to ``target`` (always_xy), heights included.

    Raises :class:`CrsError` when PROJ's best transformation needs a grid that is not installed or is a ballpark
    (e.g. heights of one vertical datum taken as another's): points are never moved by a guess.
    """
    return _exact_transformer(source.to_wkt(), target.to_wkt())


def transform_points(transformer: pyproj.Transformer, *coords: np.ndarray,
                     direction: str = "FORWARD") -> tuple[np.ndarray, ...]:
    """``transformer.transform`` for coordinate arrays of any length, returned as float arrays.

    pyproj 3.7 sends 1-element arrays down its single-point path, which NumPy (>= 1.25) deprecates; those go as
    floats here.
    """
    arrays = [np.asarray(c, dtype=float) for c in coords]
    if arrays[0].size == 1:
        out = transformer.transform(*(float(a.reshape(-1)[0]) for a in arrays), direction=direction)
        return tuple(np.full(arrays[0].shape, v, dtype=float) for v in out)
    return tuple(np.asarray(v, dtype=float) for v in transformer.transform(*arrays, direction=direction))


def to_geographic3d(crs: pyproj.CRS, *, allow_ballpark: bool = False) -> pyproj.Transformer:
    """Transformer from ``crs`` to EPSG:4979 (lon, lat, ellipsoidal height; always_xy).

    Raises :class:`CrsError` where PROJ would fall back to a ballpark vertical transformation, unless
    ``allow_ballpark`` is set (then it warns with :class:`CimWarning`).
    """
    return _to_geographic3d(crs.to_wkt(), allow_ballpark)


def to_ecef(
    crs: pyproj.CRS, x: np.ndarray, y: np.ndarray, z: np.ndarray, *, allow_ballpark: bool = False
) -> np.ndarray:
    """Source-CRS coordinates to WGS 84 geocentric (ECEF) as an (n, 3) array."""
    lon, lat, h = transform_points(to_geographic3d(crs, allow_ballpark=allow_ballpark), x, y, z)
    return np.column_stack(geographic_to_ecef(lon, lat, h))


def geographic_to_ecef(lon: np.ndarray, lat: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, ...]:
    """WGS 84 lon/lat (degrees) and ellipsoidal height to ECEF X, Y, Z."""
    return transform_points(_GEOG_TO_ECEF, lon, lat, h)


def ecef_to_geographic(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """ECEF X, Y, Z to WGS 84 lon/lat (degrees) and ellipsoidal height."""
    return transform_points(_GEOG_TO_ECEF, x, y, z, direction="INVERSE")


_GEOG_TO_ECEF = pyproj.Transformer.from_crs(GEOGRAPHIC_3D, ECEF, always_xy=True)


def ecef_from_enu(lon_deg: float, lat_deg: float, h: float) -> np.ndarray:
    """4x4 matrix taking local east-north-up coordinates at (lon, lat, h) to ECEF."""
    lon_deg, lat_deg, h = (float(np.squeeze(v)) for v in (lon_deg, lat_deg, h))  # scalars or 1-element arrays
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    east = np.array([-np.sin(lon), np.cos(lon), 0.0])
    north = np.array([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])
    up = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    origin = np.array(geographic_to_ecef(lon_deg, lat_deg, h), dtype=float)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2], matrix[:3, 3] = east, north, up, origin
    return matrix
