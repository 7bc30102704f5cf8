"""E57 point clouds (ASTM E2807: terrestrial-scanner and mobile-mapping deliveries), read with pye57.

Every scan (``data3D`` entry) is read in chunks of its compressed vector and placed with its pose (rotation
quaternion + translation). Cartesian and spherical coordinates are read; points whose invalid-state field says
they have no valid position are dropped. ``intensity`` and ``colorRed``/``Green``/``Blue`` are scaled from the
scan's limits to 16 bits (LAS's convention), so an 8-bit colour c becomes c x 257. E57 carries no CRS in a field
of its own: the root's ``coordinateMetadata`` is used when it holds one, else the reader's ``crs`` option.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim import crs as crs_mod
from cim.errors import InputError
from cim.io.readers import inside, scaled_to_u16
from cim.points import Bounds, PointCloud

_CARTESIAN = ("cartesianX", "cartesianY", "cartesianZ")
_SPHERICAL = ("sphericalRange", "sphericalAzimuth", "sphericalElevation")
_COLOURS = {"colorRed": "red", "colorGreen": "green", "colorBlue": "blue"}
#: GPS epoch: E57 dates are GPS seconds
_GPS_EPOCH = datetime.datetime(1980, 1, 6, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Scan:
    """One scan's facts: which fields it has, its pose and the limits its intensity and colours are given in."""

    index: int
    count: int
    fields: tuple[str, ...]
    rotation: np.ndarray  # 3x3
    translation: np.ndarray  # 3
    intensity_limits: tuple[float, float]
    colour_limits: dict[str, tuple[float, float]]
    local_bounds: Bounds | None

    def place(self, xyz: np.ndarray) -> np.ndarray:
        """Scan coordinates (n, 3) in the file's coordinate system."""
        return xyz @ self.rotation.T + self.translation


@dataclass(frozen=True)
class E57Source:
    """An opened E57 file (see :class:`cim.io.readers.PointSource`)."""

    path: Path
    crs: pyproj.CRS | None
    scans: tuple[Scan, ...]
    created: datetime.date | None
    #: Read whole: a scan's compressed vector cannot start at an arbitrary point.
    seekable = False

    @property
    def point_count(self) -> int:
        return sum(s.count for s in self.scans)

    @property
    def acquired(self) -> datetime.date | None:
        return self.created

    @property
    def bounds(self) -> Bounds:
        """The scans' bounds placed by their poses (a box around the rotated corners), or one pass over the points
        when a scan states none."""
        if all(s.local_bounds is not None for s in self.scans):
            corners = np.concatenate([s.place(_corners(s.local_bounds)) for s in self.scans if s.count])
        else:
            corners = np.concatenate([c.xyz for c in self.chunks(1_000_000) if len(c)])
        if len(corners) == 0:
            return Bounds(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return Bounds(*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist())

    def chunks(self, chunk_size: int, bounds: Bounds | None = None) -> Iterator[PointCloud]:
        import pye57

        try:
            e57 = pye57.E57(str(self.path))
        except Exception as exc:  # noqa: BLE001 - libE57 raises its own exception types
            raise InputError(self.path, f"not a readable E57 file ({exc})") from None
        try:
            for scan in self.scans:
                for cloud in _scan_chunks(e57, scan, chunk_size, self):
                    yield cloud if bounds is None else cloud[inside(cloud, bounds)]
        finally:
            e57.close()


def _corners(b: Bounds) -> np.ndarray:
    return np.array([[x, y, z] for x in (b.minx, b.maxx) for y in (b.miny, b.maxy) for z in (b.minz, b.maxz)])


def _scan_chunks(e57: Any, scan: Scan, chunk_size: int, source: E57Source) -> Iterator[PointCloud]:
    """One scan's points, ``chunk_size`` at a time, read from its compressed vector into reused buffers."""
    header = e57.get_header(scan.index)
    arrays, buffers = e57.make_buffers(list(scan.fields), chunk_size)
    reader = header.points.reader(buffers)
    seen = 0
    try:
        while (n := reader.read()) > 0:
            seen += n
            yield _to_cloud({k: v[:n] for k, v in arrays.items()}, scan, source.crs)
    except Exception as exc:  # noqa: BLE001
        raise InputError(source.path, f"truncated or corrupt E57 scan {scan.index} after {seen} points ({exc})") \
            from None
    finally:
        reader.close()


def _to_cloud(arrays: dict[str, np.ndarray], scan: Scan, crs: pyproj.CRS | None) -> PointCloud:
    if "cartesianX" in arrays:
        xyz = np.column_stack([arrays[f] for f in _CARTESIAN]).astype("f8")
        state = arrays.get("cartesianInvalidState")
    else:
        r, azimuth, elevation = (arrays[f].astype("f8") for f in _SPHERICAL)
        xyz = np.column_stack([r * np.cos(elevation) * np.cos(azimuth), r * np.cos(elevation) * np.sin(azimuth),
                               r * np.sin(elevation)])
        state = arrays.get("sphericalInvalidState")
    keep = slice(None) if state is None else state == 0  # 1: direction only, 2: no position
    xyz = scan.place(xyz[keep])
    data: dict[str, np.ndarray] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    if "intensity" in arrays:
        data["intensity"] = scaled_to_u16(arrays["intensity"][keep], *scan.intensity_limits)
    for field, name in _COLOURS.items():
        if field in arrays:
            data[name] = scaled_to_u16(arrays[field][keep], *scan.colour_limits[field])
    return PointCloud(data, crs)


def open_source(path: str | Path, crs: str | pyproj.CRS | None = None) -> E57Source:
    """Read an E57 file's structure (scans, poses, limits); ``crs`` overrides its coordinate metadata."""
    import pye57

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        e57 = pye57.E57(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"not a readable E57 file ({exc})") from None
    try:
        scans = tuple(_scan(e57.get_header(i), i, path) for i in range(e57.scan_count))
        root = e57.root
        metadata = root["coordinateMetadata"].value() if root.isDefined("coordinateMetadata") else ""
        created = _date(root["creationDateTime"]["dateTimeValue"].value()) if root.isDefined("creationDateTime") \
            else None
    finally:
        e57.close()
    return E57Source(path, _crs(path, crs, metadata), scans, created)


def _crs(path: Path, override: str | pyproj.CRS | None, metadata: str) -> pyproj.CRS | None:
    if override is not None:
        return crs_mod.resolve(override)
    if not metadata.strip():
        return None
    try:
        return pyproj.CRS.from_user_input(metadata)
    except pyproj.exceptions.CRSError as exc:
        raise InputError(path, f"its coordinateMetadata is not a CRS PROJ reads ({exc}); give the CRS with --crs") \
            from None


def _date(gps_seconds: float) -> datetime.date | None:
    return (_GPS_EPOCH + datetime.timedelta(seconds=gps_seconds)).date() if gps_seconds > 0 else None


def _scan(header: Any, index: int, path: Path) -> Scan:
    fields = set(header.point_fields)
    if set(_CARTESIAN) <= fields:
        wanted = [*_CARTESIAN, *(["cartesianInvalidState"] if "cartesianInvalidState" in fields else [])]
    elif set(_SPHERICAL) <= fields:
        wanted = [*_SPHERICAL, *(["sphericalInvalidState"] if "sphericalInvalidState" in fields else [])]
    else:
        raise InputError(path, f"scan {index} has neither cartesian nor spherical coordinates")
    wanted += [f for f in ("intensity", *_COLOURS) if f in fields]
    node = header.node
    return Scan(
        index=index,
        count=int(header.point_count),
        fields=tuple(wanted),
        rotation=np.asarray(header.rotation_matrix, dtype="f8"),
        translation=np.asarray(header.translation, dtype="f8"),
        intensity_limits=_limits(node, "intensityLimits", "intensity", (0.0, 1.0)),
        colour_limits={f: _limits(node, "colorLimits", f, (0.0, 255.0)) for f in _COLOURS if f in fields},
        local_bounds=_bounds(node),
    )


def _limits(node: Any, table: str, field: str, default: tuple[float, float]) -> tuple[float, float]:
    """(minimum, maximum) a field is given in, from the scan's limits table (else the E57 default)."""
    if not node.isDefined(table):
        return default
    limits = node[table]
    keys = (f"{field}Minimum", f"{field}Maximum")
    if not all(limits.isDefined(k) for k in keys):
        return default
    return (float(limits[keys[0]].value()), float(limits[keys[1]].value()))


def _bounds(node: Any) -> Bounds | None:
    if not node.isDefined("cartesianBounds"):
        return None
    b = node["cartesianBounds"]
    values = [float(b[f"{axis}{end}"].value()) for end in ("Minimum", "Maximum") for axis in "xyz"]
    return Bounds(*values) if all(math.isfinite(v) for v in values) else None
