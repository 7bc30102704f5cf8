"""Coordinate reference systems: parsing, the PROJ grids shipped with cim, exact 3D transformations, ENU frames.

Heights must be right. Every transformation to ellipsoidal heights goes through :func:`to_geographic3d`, which
refuses PROJ's "ballpark" vertical fallback (that silently treats DHHN2016 or NAP heights as ellipsoidal, an error
of ~48 m in Germany) unless the caller explicitly allows it, in which case it warns loudly. What counts as exact is
decided in one place, :func:`transformation_problem`, for these transformations, :func:`exact_transformer` and the
planning checks of :mod:`cim.crs_plan`.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable
from functools import lru_cache, wraps
from importlib import resources
from pathlib import Path

import numpy as np
import pyproj
from pyproj.aoi import AreaOfInterest
from pyproj.transformer import TransformerGroup

from cim.errors import CimWarning, CrsError
from cim.points import Bounds

log = logging.getLogger("cim.crs")

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


GRID_TOLERANCE_M = 0.5  # a missing grid that costs less than this (EPSG accuracies) is only logged


@lru_cache(maxsize=16)
def lonlat_transformer(crs: pyproj.CRS) -> pyproj.Transformer:
    """Any transformer to longitude/latitude: it only locates the data (a missing grid is reported elsewhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


def area_of_interest(crs: pyproj.CRS, bounds: Bounds | None) -> AreaOfInterest | None:
    """The bounds as longitude/latitude (any accuracy: it only picks PROJ's candidate operations)."""
    if bounds is None:
        return None
    try:
        to_geo = lonlat_transformer(horizontal_part(crs))
        west, south, east, north = to_geo.transform_bounds(bounds.minx, bounds.miny, bounds.maxx, bounds.maxy)
    except pyproj.exceptions.ProjError:
        return None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        return None
    return AreaOfInterest(west, max(south, -90.0), east, min(north, 90.0))


def is_3d(crs: pyproj.CRS) -> bool:
    """Whether ``crs`` has heights (compound, vertical or 3D geographic/geocentric)."""
    return crs.is_compound or crs.is_vertical or len(crs.axis_info) == 3


def _best_transformation(source: pyproj.CRS, target: pyproj.CRS,
                         bounds: Bounds | None = None) -> tuple[pyproj.Transformer | None, str | None]:
    """PROJ's best available transformation (for points inside ``bounds``) and why it is not exact, or ``None``.

    Not exact: none at all; a *ballpark* datum step (one datum taken as the other); a *ballpark* vertical step
    where heights are transformed (orthometric heights taken as ellipsoidal); or a grid the exact one needs and
    PROJ does not find, where its absence costs more than :data:`GRID_TOLERANCE_M` by EPSG's stated accuracies.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PROJ's "best transformation is not available" is reported below
        group = TransformerGroup(source, target, always_xy=True, area_of_interest=area_of_interest(source, bounds))
    route = f"{describe(source)} -> {describe(target)}"
    if not group.transformers:
        return None, f"{route}: PROJ knows no transformation"
    best = group.transformers[0]
    exact = group.unavailable_operations[0] if not group.best_available and group.unavailable_operations else None
    grids = sorted({g.short_name for g in exact.grids if not g.available}) if exact else []
    needs = (f"; the exact one needs the grid {', '.join(grids)}, which PROJ does not find (pyproj sync --file "
             f"{grids[0]}, or a copy in a PROJ_DATA folder)") if grids else ""
    steps = best.description.lower()
    if vertical_part(source) is not None and is_3d(target) and "ballpark vertical" in steps:
        return best, (f"{route}: no exact vertical transformation, PROJ has only a ballpark vertical one "
                      f"(heights taken as ellipsoidal){needs}")
    if "ballpark geographic" in steps or "ballpark geocentric" in steps:
        return best, (f"{route}: no datum transformation, PROJ has only a ballpark one (one datum taken as the "
                      f"other: metres to hundreds of metres off){needs}")
    if exact is not None:
        loss = best.accuracy - exact.accuracy if best.accuracy >= 0 and exact.accuracy >= 0 else math.inf
        if loss > GRID_TOLERANCE_M:
            lost = f"~{loss:.1f} m" if math.isfinite(loss) else "by an unknown amount"
            rougher = f"without a grid PROJ would fall back to a rougher transformation ({lost} worse)"
            return best, f"{route}: {rougher}{needs}"
        log.info("%s: exact transformation unavailable (%s), fallback within %.2f m", route, ", ".join(grids), loss)
    return best, None


def transformation_problem(source: pyproj.CRS, target: pyproj.CRS, bounds: Bounds | None = None) -> str | None:
    """Why PROJ cannot transform ``source`` to ``target`` exactly (for points inside ``bounds``), or ``None``."""
    return _best_transformation(source, target, bounds)[1]


def _per_thread(fn: Callable[..., pyproj.Transformer]) -> Callable[..., pyproj.Transformer]:
    """``lru_cache`` of ``fn`` in each thread: the transformers of a ``TransformerGroup`` are not thread-safe
    (pyproj wraps them as ``TransformerUnsafe``), and two tile steps of the threads scheduler transforming through one
    of them at once broke PROJ's reading of a geoid grid ("TIFFFillStrip: Invalid strip byte count"): each thread
    builds and keeps its own. ``cache_clear`` clears the calling thread's."""
    local = threading.local()

    def cache() -> Callable[..., pyproj.Transformer]:
        if not hasattr(local, "cached"):
            local.cached = lru_cache(maxsize=64)(fn)
        return local.cached

    @wraps(fn)
    def cached(*args: object) -> pyproj.Transformer:
        return cache()(*args)

    cached.cache_clear = lambda: cache().cache_clear()  # type: ignore[attr-defined]
    return cached


@_per_thread
def _to_geographic3d(wkt: str, allow_ballpark: bool) -> pyproj.Transformer:
    source = pyproj.CRS.from_wkt(wkt)
    best, problem = _best_transformation(source, GEOGRAPHIC_3D)
    if best is None or (problem and not allow_ballpark):
        raise CrsError(f"{problem}. Give the heights' geoid grid to PROJ, or allow the ballpark explicitly.")
    if problem:
        warnings.warn(problem, CimWarning, stacklevel=3)
    if vertical_part(source) is None and not source.is_geographic:
        warnings.warn(
            f"{describe(source)} has no vertical CRS: heights are taken as ellipsoidal (WGS 84). "
            f"Give a compound CRS such as EPSG:{source.to_epsg() or 25832}+7837 (DHHN2016 heights; --crs) for "
            "orthometric heights.",
            CimWarning,
            stacklevel=3,
        )
    return best


@_per_thread
def _exact_transformer(source_wkt: str, target_wkt: str, bounds: Bounds | None) -> pyproj.Transformer:
    best, problem = _best_transformation(pyproj.CRS.from_wkt(source_wkt), pyproj.CRS.from_wkt(target_wkt), bounds)
    if best is None or problem:
        raise CrsError(f"no exact transformation from {problem}. Install the grid for PROJ, or choose another CRS.")
    return best


def exact_transformer(source: pyproj.CRS, target: pyproj.CRS, bounds: Bounds | None = None) -> pyproj.Transformer:
    """Transformer from ``source`` to ``target`` (always_xy) for points inside ``bounds``, heights included.

    Raises :class:`CrsError` where PROJ's best transformation is not exact (see :func:`transformation_problem`):
    points are never moved by a guess.
    """
    return _exact_transformer(source.to_wkt(), target.to_wkt(), bounds)


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
    ``allow_ballpark`` is set (then it warns with :class:`CimWarning`). Cached per thread: use it in the thread
    that asked for it.
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
