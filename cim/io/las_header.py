"""Checks of a LAS/LAZ header when a file is opened: finite, plausible scales, offsets and bounds, and point data
that fits the file (uncompressed LAS) or a LAZ chunk table inside it. Each refuses with one line naming the file."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import laspy
import numpy as np

from cim.errors import InputError

#: Scales outside this range are not a plausible coordinate resolution (metres, feet or degrees).
SCALE_RANGE = (1e-10, 100.0)
#: No coordinate of any CRS on Earth is larger than this (ECEF metres are below 7e6, projected below 4e7).
MAX_COORDINATE = 1e9


def _values(values: Any) -> str:
    """Numbers as the user would write them, NaN and infinity included (``[nan, 0.01, 0.01]``)."""
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(values, dtype=float)) + "]"


def check_header(path: Path, header: laspy.LasHeader) -> None:
    """Refuse a header whose values are not finite or not plausible, or whose point count the file cannot hold."""
    scales, offsets = np.asarray(header.scales, float), np.asarray(header.offsets, float)
    if not np.all(np.isfinite(scales)) or not np.all(np.isfinite(offsets)):
        raise InputError(path, f"header scale {_values(scales)} or offset {_values(offsets)} is not finite")
    low, high = SCALE_RANGE
    if np.any(np.abs(scales) < low) or np.any(np.abs(scales) > high):
        raise InputError(path, f"header scale {_values(scales)} is not plausible (expected {low:g} to {high:g})")
    if np.any(np.abs(offsets) > MAX_COORDINATE):
        raise InputError(path, f"header offset {_values(offsets)} is not plausible (beyond {MAX_COORDINATE:g})")
    if header.point_count:
        mins, maxs = np.asarray(header.mins, float), np.asarray(header.maxs, float)
        if not (np.all(np.isfinite(mins)) and np.all(np.isfinite(maxs))):
            raise InputError(path, f"header bounds {_values(mins)} - {_values(maxs)} are not finite")
        if np.any(mins > maxs) or np.any(np.abs(np.r_[mins, maxs]) > MAX_COORDINATE):
            raise InputError(path, f"header bounds {_values(mins)} - {_values(maxs)} are not plausible")
        if header.point_count > 1 and not np.any(np.r_[mins, maxs]):  # tiles are planned from the bounds
            raise InputError(path, f"header bounds are all 0 for {header.point_count:,} points (not written by "
                                   "its writer); fix the header (e.g. lasinfo -repair_bb)")
    _check_size(Path(path), header)


def _check_size(path: Path, header: laspy.LasHeader) -> None:
    """The point data the header announces must fit in the file (uncompressed) / the LAZ chunk table must exist."""
    size = path.stat().st_size
    start, count = int(header.offset_to_point_data), int(header.point_count)
    if not header.are_points_compressed:
        needed = start + count * int(header.point_format.size)
        if size < needed:
            raise InputError(path, f"header says {count:,} points ({needed:,} bytes) but the file has "
                                   f"{size:,} bytes (truncated, or a wrong point count)")
        return
    with open(path, "rb") as handle:
        handle.seek(start)
        raw = handle.read(8)
    if len(raw) < 8:
        raise InputError(path, f"LAZ file ends at {size:,} bytes, before its point data (truncated)")
    (table,) = struct.unpack("<q", raw)
    if table != -1 and not start + 8 <= table <= size - 8:
        raise InputError(path, f"LAZ chunk table expected at byte {table:,} but the file has {size:,} bytes "
                               "(truncated)")
