"""Time bases of pose files, converted to cim's internal GPS seconds (since 1980-01-06, no leap seconds).

* GPS seconds (Trimble MX7 ``gps_seconds[s]``): used as they are.
* Adjusted GPS time (LAS 1.4 "standard GPS time"): GPS seconds − 1e9.
* GPS week + seconds of week (Leica, Trimble Trident, CHC): the week comes from the mission date.
* UTC (ISO strings, Unix seconds): GPS = UTC + (GPS − UTC leap-second offset at that instant).
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cim.io.las import ADJUSTED_GPS_OFFSET, SECONDS_PER_WEEK

__all__ = [
    "GPS_EPOCH_UNIX",
    "SECONDS_PER_WEEK",
    "gps_from_adjusted",
    "gps_from_iso",
    "gps_from_unix",
    "gps_from_week_seconds",
    "gps_minus_utc",
    "gps_week_of",
    "iso_from_gps",
    "to_gps_seconds",
    "unix_from_gps",
]

GPS_EPOCH_UNIX = 315_964_800.0  # 1980-01-06T00:00:00Z as Unix seconds

# UTC instants (Unix seconds) from which GPS − UTC took the given value (IERS Bulletin C; 18 s since 2017-01-01).
_LEAP_TABLE: tuple[tuple[str, int], ...] = (
    ("1981-07-01", 1), ("1982-07-01", 2), ("1983-07-01", 3), ("1985-07-01", 4), ("1988-01-01", 5),
    ("1990-01-01", 6), ("1991-01-01", 7), ("1992-07-01", 8), ("1993-07-01", 9), ("1994-07-01", 10),
    ("1996-01-01", 11), ("1997-07-01", 12), ("1999-01-01", 13), ("2006-01-01", 14), ("2009-01-01", 15),
    ("2012-07-01", 16), ("2015-07-01", 17), ("2017-01-01", 18),
)
_LEAP_UNIX = np.array(
    [datetime.fromisoformat(d).replace(tzinfo=timezone.utc).timestamp() for d, _ in _LEAP_TABLE], dtype=np.float64
)
_LEAP_VALUE = np.array([v for _, v in _LEAP_TABLE], dtype=np.float64)
# The same switch instants expressed on the GPS time scale (GPS seconds since the GPS epoch).
_LEAP_GPS = _LEAP_UNIX - GPS_EPOCH_UNIX + _LEAP_VALUE


def gps_minus_utc(unix_seconds: ArrayLike) -> NDArray[np.float64]:
    """GPS − UTC in seconds (the leap-second count since 1980) at the given UTC instants (Unix seconds)."""
    t = np.asarray(unix_seconds, dtype=np.float64)
    idx = np.searchsorted(_LEAP_UNIX, t, side="right")
    return np.where(idx > 0, _LEAP_VALUE[np.maximum(idx - 1, 0)], 0.0)


def gps_from_unix(unix_seconds: ArrayLike) -> NDArray[np.float64]:
    """GPS seconds from UTC Unix seconds, applying the leap seconds in force at that instant."""
    t = np.asarray(unix_seconds, dtype=np.float64)
    return t - GPS_EPOCH_UNIX + gps_minus_utc(t)


def unix_from_gps(gps_seconds: ArrayLike) -> NDArray[np.float64]:
    """UTC Unix seconds from GPS seconds (leap seconds removed)."""
    g = np.asarray(gps_seconds, dtype=np.float64)
    idx = np.searchsorted(_LEAP_GPS, g, side="right")
    leaps = np.where(idx > 0, _LEAP_VALUE[np.maximum(idx - 1, 0)], 0.0)
    return g + GPS_EPOCH_UNIX - leaps


def gps_from_iso(text: str) -> float:
    """GPS seconds from an ISO 8601 UTC timestamp (``2016-03-24T08:11:35.868Z``; no zone means UTC)."""
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return float(gps_from_unix(stamp.timestamp()))


def iso_from_gps(gps_seconds: float) -> str:
    """ISO 8601 UTC timestamp (millisecond precision, ``Z`` suffix) of a GPS-seconds instant."""
    unix = float(unix_from_gps(gps_seconds))
    stamp = datetime.fromtimestamp(round(unix, 3), tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def gps_from_week_seconds(seconds_of_week: ArrayLike, week: int) -> NDArray[np.float64]:
    """GPS seconds from seconds of the GPS week and the (full, not modulo-1024) GPS week number."""
    return np.asarray(seconds_of_week, dtype=np.float64) + float(week) * SECONDS_PER_WEEK


def gps_week_of(date_iso: str) -> int:
    """The GPS week that contains the given UTC date (``2026-11-23``), e.g. for week-seconds pose files."""
    return int(gps_from_iso(date_iso) // SECONDS_PER_WEEK)


def gps_from_adjusted(adjusted: ArrayLike) -> NDArray[np.float64]:
    """GPS seconds from LAS 1.4 adjusted standard GPS time (GPS seconds − 1e9)."""
    return np.asarray(adjusted, dtype=np.float64) + ADJUSTED_GPS_OFFSET


def to_gps_seconds(values: ArrayLike, time_base: str, *, week: int | None = None) -> NDArray[np.float64]:
    """Convert numeric time values in ``time_base`` ("gps", "gps_adjusted", "gps_week", "unix") to GPS seconds."""
    if time_base == "gps":
        return np.asarray(values, dtype=np.float64)
    if time_base == "gps_adjusted":
        return gps_from_adjusted(values)
    if time_base == "gps_week":
        if week is None:
            raise ValueError("time base gps_week needs the GPS week (or the mission date)")
        return gps_from_week_seconds(values, week)
    if time_base == "unix":
        return gps_from_unix(values)
    raise ValueError(f"unknown time base {time_base!r} (gps, gps_adjusted, gps_week, unix)")
