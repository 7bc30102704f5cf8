"""Pose files in the Trimble MX7 layout (``panorama1.csv``, ``trajectory.csv``) and heading references.

Both files are TAB-separated with CRLF line ends, exactly as the MX7 writes them (see
``shared/data/panoramas/amsterdam``): GPS seconds, WGS 84 latitude/longitude, ellipsoidal height, and for
panoramas roll/pitch/heading in degrees. Positions come from the projected CRS through :func:`cim.crs.to_geographic3d`
(EPSG:25832+7837 uses the GCG2016 quasigeoid). Like the MX7's inertial system, the files give the heading from
*true* (geographic) north; cim's internal heading is from grid north (see docs/conventions.md), so the two differ by
the meridian convergence (about -0.9° at Kaiserslautern). :func:`true_from_grid_heading` and
:func:`grid_from_true_heading` convert exactly, through the geodesic azimuth.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyproj

from cim import crs as crs_mod
from cim.errors import InputError
from cim.fileutil import write_text_atomic

PANORAMA_COLUMNS = ["gps_seconds[s]", "panorama_file_name", "latitude[deg]", "longitude[deg]",
                    "altitude_ellipsoidal[m]", "roll[deg]", "pitch[deg]", "heading[deg]"]
TRAJECTORY_COLUMNS = ["gps_seconds[s]", "latitude[deg]", "longitude[deg]", "altitude_ellipsoidal[m]",
                      "north_rms[m]", "east_rms[m]", "down_rms[m]", "roll_rms[deg]", "pitch_rms[deg]",
                      "heading_rms[deg]"]
TRUTH_TRAJECTORY_COLUMNS = ["gps_seconds[s]", "easting[m]", "northing[m]", "height[m]", "roll[deg]", "pitch[deg]",
                            "heading_grid[deg]"]
_GEOD = pyproj.Geod(ellps="WGS84")
_STEP = 10.0  # m, baseline used to turn a direction into an azimuth


def _arrays(*values: object) -> list[np.ndarray]:
    """Flat float64 arrays (pyproj treats size-1 arrays as deprecated scalars: :func:`_apply` passes floats)."""
    return [np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel() for v in values]


def _apply(fn: object, *values: object, **kwargs: object) -> list[np.ndarray]:
    arrays = _arrays(*values)
    if arrays[0].size == 1:
        result = fn(*(float(a[0]) for a in arrays), **kwargs)  # type: ignore[operator]
    else:
        result = fn(*arrays, **kwargs)  # type: ignore[operator]
    return [np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in result]


def _fmt(value: float) -> str:
    return f"{value:.15g}"


def _table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["\t".join(columns)] + ["\t".join(r) for r in rows]
    return "\r\n".join(lines) + "\r\n"


def _projected(crs: pyproj.CRS) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(crs_mod.horizontal_part(crs), "EPSG:4326", always_xy=True)


def true_from_grid_heading(x: np.ndarray, y: np.ndarray, heading: np.ndarray, crs: pyproj.CRS) -> np.ndarray:
    """Headings from true north (deg, [0, 360)) for grid headings at projected positions ``(x, y)``."""
    tr = _projected(crs)
    x, y, h = _arrays(x, y, heading)
    h = np.radians(h)
    lon1, lat1 = _apply(tr.transform, x, y)
    lon2, lat2 = _apply(tr.transform, x + _STEP * np.sin(h), y + _STEP * np.cos(h))
    az, _, _ = _apply(_GEOD.inv, lon1, lat1, lon2, lat2)
    return np.mod(az, 360.0)


def grid_from_true_heading(lon: np.ndarray, lat: np.ndarray, heading: np.ndarray, crs: pyproj.CRS) -> np.ndarray:
    """Grid headings (deg, [0, 360)) in ``crs`` for true headings at geographic ``(lon, lat)``."""
    lon, lat, heading = _arrays(lon, lat, heading)
    lon2, lat2, _ = _apply(_GEOD.fwd, lon, lat, heading, np.full(lon.shape, _STEP))
    tr = _projected(crs)
    x1, y1 = _apply(tr.transform, lon, lat, direction="INVERSE")
    x2, y2 = _apply(tr.transform, lon2, lat2, direction="INVERSE")
    return np.mod(np.degrees(np.arctan2(x2 - x1, y2 - y1)), 360.0)


def to_geographic(x: np.ndarray, y: np.ndarray, z: np.ndarray, crs: pyproj.CRS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, ellipsoidal height) of projected positions (exact vertical grid, else :class:`CrsError`)."""
    lon, lat, h = _apply(crs_mod.to_geographic3d(crs).transform, x, y, z)
    return lon, lat, h


def from_geographic(lon: np.ndarray, lat: np.ndarray, h: np.ndarray, crs: pyproj.CRS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projected (x, y, z) of (lon, lat, ellipsoidal height): the inverse of :func:`to_geographic`."""
    x, y, z = _apply(crs_mod.to_geographic3d(crs).transform, lon, lat, h, direction="INVERSE")
    return x, y, z


def write_panorama_csv(path: Path, gps: np.ndarray, names: list[str], xyz: np.ndarray, heading_grid: np.ndarray,
                       pitch: np.ndarray, roll: np.ndarray, crs: pyproj.CRS) -> Path:
    """The MX7 ``panorama1.csv``: one row per panorama, heading from true north."""
    lon, lat, h = to_geographic(xyz[:, 0], xyz[:, 1], xyz[:, 2], crs)
    heading = true_from_grid_heading(xyz[:, 0], xyz[:, 1], heading_grid, crs)
    rows = [[_fmt(g), n, _fmt(la), _fmt(lo), _fmt(hh), _fmt(r), _fmt(p), _fmt(hd)]
            for g, n, la, lo, hh, r, p, hd in zip(gps, names, lat, lon, h, roll, pitch, heading)]
    write_text_atomic(path, _table(PANORAMA_COLUMNS, rows))
    return path


def write_trajectory_csv(path: Path, gps: np.ndarray, xyz: np.ndarray, rms: tuple[float, ...], crs: pyproj.CRS
                         ) -> Path:
    """The MX7 ``trajectory.csv``: positions with their RMS (north, east, down m; roll, pitch, heading deg)."""
    lon, lat, h = to_geographic(xyz[:, 0], xyz[:, 1], xyz[:, 2], crs)
    tail = [_fmt(v) for v in rms]
    rows = [[_fmt(g), _fmt(la), _fmt(lo), _fmt(hh), *tail] for g, la, lo, hh in zip(gps, lat, lon, h)]
    write_text_atomic(path, _table(TRAJECTORY_COLUMNS, rows))
    return path


def write_truth_trajectory_csv(path: Path, gps: np.ndarray, xyz: np.ndarray, heading_grid: np.ndarray,
                               pitch: np.ndarray, roll: np.ndarray) -> Path:
    """The true trajectory in the projected CRS with grid headings (same TAB/CRLF style)."""
    rows = [[_fmt(g), _fmt(x), _fmt(y), _fmt(z), _fmt(r), _fmt(p), _fmt(h)]
            for g, (x, y, z), r, p, h in zip(gps, xyz, roll, pitch, heading_grid)]
    write_text_atomic(path, _table(TRUTH_TRAJECTORY_COLUMNS, rows))
    return path


def read_table(path: str | Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Read a TAB-separated pose table with the given header; numeric columns become float64 arrays."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    rows = [r for r in reader if r]
    if not rows or rows[0] != columns:
        raise InputError(path, f"expected the header {columns}, found {rows[0] if rows else 'nothing'}")
    body = rows[1:]
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(columns):
        values = [r[i] for r in body]
        out[name] = np.array(values, dtype=object) if name == "panorama_file_name" else np.array(values, float)
    return out
