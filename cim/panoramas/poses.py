"""Pose files of panoramic drives: readers, angle-convention adapters and trajectory interpolation.

Everything is normalised at the edge into a :class:`PoseTable`: names, GPS seconds, positions in the file's CRS and
world_from_body quaternions ``(w, x, y, z)`` in the local east-north-up frame (cim's one convention, see
``docs/conventions.md``), together with whether the file's headings refer to true or grid north.
Georeferencing (:mod:`cim.panoramas.georef`) turns a table into positions in the job CRS.

Supported layouts (detected from the header):

* Trimble MX7 ``panorama1.csv`` (tab-separated, ``gps_seconds[s] panorama_file_name latitude[deg] longitude[deg]
  altitude_ellipsoidal[m] roll[deg] pitch[deg] heading[deg]``; true-north headings, WGS 84 ellipsoidal heights).
* Trimble MX7 ``trajectory.csv`` (positions and RMS only).
* cim's generic CSV (``docs/panoramas.md``): ``name``, ``time``, ``x y z`` or ``lon lat h``, angles or quaternion.
* GPano XMP inside a JPEG (``PoseHeadingDegrees`` ...), see :func:`read_gpano`.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import pyproj
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation, Slerp

from cim import camera
from cim.errors import InputError
from cim.panoramas import timebase

if TYPE_CHECKING:
    from typing_extensions import Unpack  # keyword-argument typing (PEP 692), for type checkers only

__all__ = [
    "ANGLE_CONVENTIONS",
    "PoseTable",
    "Trajectory",
    "quaternion_from_convention",
    "read_gpano",
    "read_poses",
    "read_trajectory",
]

FloatArray = NDArray[np.float64]
WGS84_3D = pyproj.CRS.from_epsg(4979)

# Angle conventions met in pose files, each converted to cim's heading/pitch/roll (degrees) before the one
# rotation formula of cim.camera is applied.
ANGLE_CONVENTIONS = {
    "hpr": "heading clockwise from north, pitch nose up, roll right side down, degrees (Trimble, Leica, GPano)",
    "hpr_rad": "as hpr, in radians (VC Map, CesiumJS HeadingPitchRoll)",
    "esri": "Esri Oriented Imagery: cameraHeading, cameraPitch (0 = straight down, 90 = horizon), cameraRoll",
    "yaw_enu": "yaw counter-clockwise from east (mathematical), pitch nose up, roll right side down, degrees",
    "quaternion": "world_from_body quaternion w, x, y, z in east-north-up, body x forward, y left, z up",
}


def quaternion_from_convention(convention: str, a: ArrayLike, b: ArrayLike, c: ArrayLike) -> FloatArray:
    """world_from_body quaternions ``(n, 4)`` from three angle columns in a named convention.

    ``a, b, c`` are (heading, pitch, roll) in the order each convention names them (``esri``: cameraHeading,
    cameraPitch, cameraRoll; ``yaw_enu``: yaw, pitch, roll).
    """
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    if convention == "hpr":
        h, p, r = a, b, c
    elif convention == "hpr_rad":
        h, p, r = np.degrees(a), np.degrees(b), np.degrees(c)
    elif convention == "esri":
        h, p, r = a, b - 90.0, c
    elif convention == "yaw_enu":
        h, p, r = 90.0 - a, b, c
    else:
        raise ValueError(f"unknown angle convention {convention!r}; known: {', '.join(ANGLE_CONVENTIONS)}")
    return np.atleast_2d(camera.quaternion_from_angles(np.mod(h, 360.0), p, r))


@dataclass
class PoseTable:
    """Exterior orientations as read from a pose file, before georeferencing.

    ``position`` is in ``crs`` (EPSG:4979 lon/lat/ellipsoidal height for geographic files); ``quaternion`` is
    world_from_body in east-north-up where "north" is ``north`` ("true" for geographic headings, "grid" for
    headings relative to the projected CRS). Unknown values are NaN (e.g. a file of times only).
    """

    names: list[str]
    gps_time: FloatArray
    position: FloatArray
    quaternion: FloatArray
    crs: pyproj.CRS
    north: str = "true"
    source: str = ""
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def __post_init__(self) -> None:
        n = len(self.names)
        self.gps_time = np.asarray(self.gps_time, dtype=np.float64).reshape(n)
        self.position = np.asarray(self.position, dtype=np.float64).reshape(n, 3)
        self.quaternion = np.asarray(self.quaternion, dtype=np.float64).reshape(n, 4)
        if self.north not in ("true", "grid"):
            raise ValueError(f"north must be 'true' or 'grid', got {self.north!r}")

    @property
    def has_position(self) -> NDArray[np.bool_]:
        return np.isfinite(self.position).all(axis=1)

    @property
    def has_orientation(self) -> NDArray[np.bool_]:
        return np.isfinite(self.quaternion).all(axis=1)

    def subset(self, index: ArrayLike) -> PoseTable:
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return PoseTable(
            [self.names[i] for i in idx], self.gps_time[idx], self.position[idx], self.quaternion[idx], self.crs,
            self.north, self.source, {k: v[idx] for k, v in self.extra.items()},
        )


# --- text tables -------------------------------------------------------------------------------------------------

_UNIT_SUFFIX = re.compile(r"\[[^\]]*\]$")


def _clean_header(name: str) -> str:
    return _UNIT_SUFFIX.sub("", name.strip().lstrip("\ufeff")).strip().lower()


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header (lower case, units in brackets stripped) and rows of a delimited text file (tab, ; , or spaces)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the pose file ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) < 2:
        raise InputError(path, "no data rows (expected a header line and at least one row)")
    first = lines[0]
    if "\t" in first:
        delim = "\t"
    elif ";" in first:
        delim = ";"
    elif "," in first:
        delim = ","
    else:
        delim = " "
    if delim == " ":
        rows = [ln.split() for ln in lines]
    else:
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=delim)]
    header = [_clean_header(h) for h in rows[0]]
    body = [r for r in rows[1:] if any(c for c in r)]
    for i, r in enumerate(body, start=2):
        if len(r) < len(header):
            raise InputError(path, f"row {i} has {len(r)} fields, the header has {len(header)}")
    return header, body


def _column(path: Path, header: list[str], rows: list[list[str]], *names: str, required: bool = True):
    for name in names:
        if name in header:
            j = header.index(name)
            values = [r[j] for r in rows]
            return values
    if required:
        raise InputError(path, f"missing column {' or '.join(repr(n) for n in names)} (header: {', '.join(header)})")
    return None


def _floats(path: Path, values: list[str] | None, what: str, n: int) -> FloatArray:
    if values is None:
        return np.full(n, np.nan)
    try:
        return np.array([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    except ValueError as exc:
        raise InputError(path, f"column {what!r}: not a number ({exc})") from None


class CsvLayout(TypedDict, total=False):
    """How to read a generic CSV pose or trajectory file (keyword options of :func:`read_poses`)."""

    crs: str | pyproj.CRS | None  # CRS of projected x, y, z columns
    time_base: str  # gps (default), gps_adjusted, gps_week, unix or utc
    gps_week: int | None  # for time_base gps_week
    angles: str  # angle convention (ANGLE_CONVENTIONS), default hpr
    north: str | None  # headings refer to "true" or "grid" north (default: true for lat/lon, grid for x/y)


MX7_PANORAMA_COLUMNS = ("gps_seconds", "panorama_file_name", "latitude", "longitude", "altitude_ellipsoidal",
                        "roll", "pitch", "heading")


def read_poses(path: str | Path, **layout: Unpack[CsvLayout]) -> PoseTable:
    """Read a panorama pose file (Trimble MX7 ``panorama1.csv`` or cim's generic CSV) into a :class:`PoseTable`.

    Keyword options (:class:`CsvLayout`): ``crs`` is the CRS of projected ``x, y, z`` columns (geographic
    ``lat, lon, h`` columns are always WGS 84 ellipsoidal, EPSG:4979). ``time_base`` and ``gps_week`` say how to read the time column (see
    :func:`cim.panoramas.timebase.to_gps_seconds`), ``angles`` names the angle convention
    (:data:`ANGLE_CONVENTIONS`) and ``north`` whether headings refer to "true" or "grid" north (default: true for
    geographic positions, grid for projected ones).
    """
    path = Path(path)
    header, rows = _read_table(path)
    if all(c in header for c in MX7_PANORAMA_COLUMNS):
        names = [Path(v).stem for v in _column(path, header, rows, "panorama_file_name")]
        t, lonlath = _mx7_time_position(path, header, rows)
        table = PoseTable(names, t, lonlath, _mx7_quaternion(path, header, rows), WGS84_3D,
                          layout.get("north") or "true", str(path))
    else:
        table = _read_generic(path, header, rows, **layout)
    _check_table(path, table)
    return table


def _mx7_time_position(path: Path, header: list[str], rows: list[list[str]]) -> tuple[FloatArray, FloatArray]:
    """GPS seconds and (lon, lat, ellipsoidal h) of a Trimble MX7 file's rows."""
    n = len(rows)
    t = _floats(path, _column(path, header, rows, "gps_seconds"), "gps_seconds", n)
    lonlath = [_floats(path, _column(path, header, rows, k), k, n)
               for k in ("longitude", "latitude", "altitude_ellipsoidal")]
    return t, np.column_stack(lonlath)


def _mx7_quaternion(path: Path, header: list[str], rows: list[list[str]]) -> FloatArray:
    """Orientations of a Trimble MX7 file's rows (heading, pitch, roll in degrees; NaN rows where missing)."""
    return _angles_or_nan("hpr", *(_floats(path, _column(path, header, rows, k), k, len(rows))
                                   for k in ("heading", "pitch", "roll")))


def _angles_or_nan(convention: str, a: FloatArray, b: FloatArray, c: FloatArray) -> FloatArray:
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    q = np.full((len(a), 4), np.nan)
    if ok.any():
        q[ok] = quaternion_from_convention(convention, a[ok], b[ok], c[ok])
    return q


def _read_generic(path: Path, header: list[str], rows: list[list[str]], *, crs: str | pyproj.CRS | None = None,
                  time_base: str = "gps", gps_week: int | None = None, angles: str = "hpr",
                  north: str | None = None) -> PoseTable:
    n = len(rows)
    names_col = _column(path, header, rows, "name", "image", "filename", "file", "panorama_file_name")
    names = [Path(v).stem for v in names_col]
    time_col = _column(path, header, rows, "time", "gps_time", "gps_seconds", "timestamp", required=False)
    if time_col is not None and time_base == "utc":
        try:
            t = np.array([timebase.gps_from_iso(v) for v in time_col])
        except ValueError as exc:
            raise InputError(path, f"time column: not an ISO 8601 UTC timestamp ({exc})") from None
    else:
        raw = _floats(path, time_col, "time", n)
        try:
            t = timebase.to_gps_seconds(raw, time_base, week=gps_week)
        except ValueError as exc:
            raise InputError(path, str(exc)) from None
    if "lat" in header or "latitude" in header:
        lat = _floats(path, _column(path, header, rows, "lat", "latitude"), "lat", n)
        lon = _floats(path, _column(path, header, rows, "lon", "longitude"), "lon", n)
        h = _floats(path, _column(path, header, rows, "h", "height", "altitude_ellipsoidal", "h_ell"), "h", n)
        position, pos_crs, default_north = np.column_stack([lon, lat, h]), WGS84_3D, "true"
    elif "x" in header:
        if crs is None:
            raise InputError(path, "projected x, y, z columns need the CRS they are in (give crs=..., --pose-crs)")
        position = np.column_stack([_floats(path, _column(path, header, rows, k), k, n) for k in ("x", "y", "z")])
        pos_crs, default_north = pyproj.CRS.from_user_input(crs), "grid"
    else:
        position, pos_crs, default_north = np.full((n, 3), np.nan), WGS84_3D, "true"
    if "qw" in header:
        q = np.column_stack([_floats(path, _column(path, header, rows, k), k, n) for k in ("qw", "qx", "qy", "qz")])
        norm = np.linalg.norm(q, axis=1, keepdims=True)
        if np.any(np.abs(norm[np.isfinite(norm)] - 1.0) > 1e-3):
            raise InputError(path, "quaternion columns qw, qx, qy, qz are not unit quaternions")
        q = q / norm
        q = np.where(q[:, :1] < 0, -q, q)
    elif angles == "esri":
        q = _angles_or_nan(angles, *(_floats(path, _column(path, header, rows, k, required=False), k, n)
                                     for k in ("cameraheading", "camerapitch", "cameraroll")))
    else:
        first = "yaw" if angles == "yaw_enu" else "heading"
        q = _angles_or_nan(angles, *(_floats(path, _column(path, header, rows, k, required=False), k, n)
                                     for k in (first, "pitch", "roll")))
    return PoseTable(names, t, position, q, pos_crs, north or default_north, str(path))


def _check_table(path: Path, table: PoseTable) -> None:
    seen: set[str] = set()
    for name in table.names:
        if name in seen:
            raise InputError(path, f"panorama {name!r} appears twice")
        seen.add(name)
    if table.crs.is_geographic:
        lon, lat = table.position[:, 0], table.position[:, 1]
        bad = np.isfinite(lat) & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(path, f"panorama {table.names[i]!r}: latitude/longitude out of range")
        if np.any(np.isfinite(lat) & (lat == 0) & (lon == 0)):
            raise InputError(path, "a position is exactly lat 0, lon 0 (an empty GNSS record)")


# --- trajectories ------------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """A time series of positions (and optionally orientations), sorted by GPS time.

    Positions are in ``crs``; interpolate them in a projected CRS (:meth:`to_crs`) for metric accuracy.
    """

    gps_time: FloatArray
    position: FloatArray
    crs: pyproj.CRS
    quaternion: FloatArray | None = None
    north: str = "true"
    source: str = ""

    def __post_init__(self) -> None:
        order = np.argsort(self.gps_time, kind="stable")
        self.gps_time = np.asarray(self.gps_time, dtype=np.float64)[order]
        self.position = np.asarray(self.position, dtype=np.float64)[order]
        if self.quaternion is not None:
            q = np.asarray(self.quaternion, dtype=np.float64)[order]
            self.quaternion = None if not np.isfinite(q).all() else q
        if len(self.gps_time) < 2:
            raise InputError(self.source or "trajectory", "a trajectory needs at least two records")
        if np.any(np.diff(self.gps_time) <= 0):
            raise InputError(self.source or "trajectory", "two records share the same GPS time")

    def to_crs(self, crs: pyproj.CRS, transformer: pyproj.Transformer) -> Trajectory:
        """The same trajectory with positions transformed by ``transformer`` (from ``self.crs`` to ``crs``)."""
        x, y, z = transformer.transform(*self.position.T)
        return Trajectory(self.gps_time, np.column_stack([x, y, z]), crs, self.quaternion, self.north, self.source)

    def covers(self, gps_time: ArrayLike, tolerance: float = 0.05) -> NDArray[np.bool_]:
        t = np.asarray(gps_time, dtype=np.float64)
        return (t >= self.gps_time[0] - tolerance) & (t <= self.gps_time[-1] + tolerance)

    def interpolate(self, gps_time: ArrayLike, *, max_gap: float = 1.0, tolerance: float = 0.05
                    ) -> tuple[FloatArray, FloatArray | None]:
        """Positions (linear) and quaternions (slerp) at the given GPS times.

        Raises :class:`InputError` for a time outside the trajectory (more than ``tolerance`` seconds; never
        extrapolates) or inside a gap between records longer than ``max_gap`` seconds.
        """
        t = np.atleast_1d(np.asarray(gps_time, dtype=np.float64))
        outside = ~self.covers(t, tolerance)
        if outside.any():
            bad = t[outside][0]
            gap = max(self.gps_time[0] - bad, bad - self.gps_time[-1])
            raise InputError(self.source or "trajectory", f"does not cover GPS time {bad:.3f} "
                             f"({gap:.1f} s outside {self.gps_time[0]:.3f}–{self.gps_time[-1]:.3f}); not extrapolating")
        tc = np.clip(t, self.gps_time[0], self.gps_time[-1])
        k = np.clip(np.searchsorted(self.gps_time, tc, side="right") - 1, 0, len(self.gps_time) - 2)
        span = self.gps_time[k + 1] - self.gps_time[k]
        if np.any(span > max_gap):
            bad = t[span > max_gap][0]
            raise InputError(self.source or "trajectory", f"GPS time {bad:.3f} falls in a {span.max():.1f} s gap "
                             f"(longer than max_gap {max_gap} s)")
        w = ((tc - self.gps_time[k]) / span)[:, None]
        position = self.position[k] * (1.0 - w) + self.position[k + 1] * w
        if self.quaternion is None:
            return position, None
        rot = Rotation.from_quat(self.quaternion, scalar_first=True)
        q = Slerp(self.gps_time, rot)(tc).as_quat(scalar_first=True)
        return position, np.where(q[:, :1] < 0, -q, q)


def read_trajectory(path: str | Path, **layout: Unpack[CsvLayout]) -> Trajectory:
    """Read a trajectory (Trimble MX7 ``trajectory.csv`` or the generic CSV layout with a time column); keyword
    options as for :func:`read_poses`."""
    path = Path(path)
    header, rows = _read_table(path)
    if "gps_seconds" in header and "latitude" in header:
        t, lonlath = _mx7_time_position(path, header, rows)
        q = _mx7_quaternion(path, header, rows) if all(k in header for k in ("heading", "pitch", "roll")) else None
        return Trajectory(t, lonlath, WGS84_3D, q, layout.get("north") or "true", str(path))
    if "name" not in header:
        rows = [[f"r{i}"] + r for i, r in enumerate(rows)]
        header = ["name"] + header
    table = _read_generic(path, header, rows, **layout)
    if not np.isfinite(table.gps_time).all() or not table.has_position.all():
        raise InputError(path, "a trajectory needs a time and a position on every row")
    q = table.quaternion if table.has_orientation.all() else None
    return Trajectory(table.gps_time, table.position, table.crs, q, table.north, str(path))


# --- GPano XMP ---------------------------------------------------------------------------------------------------

_XMP_START, _XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"


def read_gpano(path: str | Path) -> dict[str, str]:
    """The ``GPano:*`` properties of a JPEG's XMP packet (attribute or element form); empty when there are none."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)  # XMP lives in an APP1 segment near the start
    except OSError as exc:
        raise InputError(path, f"cannot read the image ({exc})") from None
    start = head.find(_XMP_START)
    if start < 0:
        return {}
    end = head.find(_XMP_END, start)
    packet = head[start: end if end > 0 else len(head)].decode("utf-8", "replace")
    found = dict(re.findall(r'GPano:(\w+)\s*=\s*"([^"]*)"', packet))
    found.update(re.findall(r"<GPano:(\w+)>([^<]*)</GPano:\1>", packet))
    return found


def gpano_quaternion(props: dict[str, str]) -> FloatArray | None:
    """world_from_body quaternion (true north) from GPano pose angles; ``None`` without ``PoseHeadingDegrees``."""
    if "PoseHeadingDegrees" not in props:
        return None
    h = float(props["PoseHeadingDegrees"])
    p = float(props.get("PosePitchDegrees", 0.0))
    r = float(props.get("PoseRollDegrees", 0.0))
    return quaternion_from_convention("hpr", h, p, r)[0]
