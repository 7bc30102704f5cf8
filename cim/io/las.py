"""LAS / LAZ / COPC reading (chunked, by bounds) and writing, with laspy + lazrs.

Every problem with a file is raised as :class:`cim.errors.InputError` naming the file.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import laspy
import numpy as np
import pyproj

from cim import crs as crs_mod
from cim.errors import CrsError, InputError
from cim.fileutil import atomic_write
from cim.guards import check_header
from cim.io.las_crs import header_crs
from cim.points import Bounds, PointCloud

DEFAULT_CHUNK = 1_000_000
ADJUSTED_GPS_OFFSET = 1.0e9  # LAS 1.4 adjusted standard GPS time = GPS seconds - 1e9
SECONDS_PER_WEEK = 604_800.0

#: laspy field -> cim name, for the fields that keep their meaning unchanged.
_DIRECT_FIELDS = {
    "intensity": "intensity",
    "return_number": "return_number",
    "number_of_returns": "number_of_returns",
    "classification": "classification",
    "user_data": "user_data",
    "point_source_id": "point_source_id",
    "gps_time": "gps_time",
    "red": "red",
    "green": "green",
    "blue": "blue",
    "nir": "nir",
}


@dataclass(frozen=True)
class LasSource:
    """An opened file's header facts and the CRS the points will carry."""

    path: Path
    header: laspy.LasHeader
    crs: pyproj.CRS | None
    crs_source: str  # 'wkt', 'geotiff', 'override' or 'none'
    is_copc: bool

    @property
    def point_count(self) -> int:
        return int(self.header.point_count)

    @property
    def adjusted_gps_time(self) -> bool:
        """True when the file stores adjusted standard GPS time (GPS seconds - 1e9), False for GPS week seconds."""
        return self.header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD

    @property
    def bounds(self) -> Bounds:
        """Bounds as the header states them."""
        mins, maxs = self.header.mins, self.header.maxs
        return Bounds(*(float(v) for v in (*mins, *maxs)))


def open_source(path: str | Path, crs: str | pyproj.CRS | None = None) -> LasSource:
    """Open ``path``'s header, check it, and settle its CRS (``crs`` overrides the file's)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with laspy.open(path) as reader:
            header = reader.header
            is_copc = any(isinstance(v, laspy.copc.CopcInfoVlr) for v in header.vlrs)
    except (laspy.errors.LaspyException, ValueError, OSError) as exc:
        raise InputError(path, f"not a readable LAS/LAZ file ({exc})") from None
    check_header(path, header)  # finite, plausible values; point data that fits the file
    if crs is not None:
        return LasSource(path, header, crs_mod.resolve(crs), "override", is_copc)
    try:
        file_crs, source = header_crs(header)
    except pyproj.exceptions.CRSError as exc:
        raise InputError(path, f"its CRS VLR cannot be parsed ({exc}); give the CRS with --crs") from None
    return LasSource(path, header, file_crs, source, is_copc)


def require_crs(source: LasSource) -> pyproj.CRS:
    """The source's CRS, or a clear error asking for one."""
    if source.crs is None:
        raise InputError(
            source.path, "the file declares no CRS; give one with --crs (job key 'crs'), e.g. EPSG:7415"
        )
    return source.crs


def _to_cloud(record: laspy.ScaleAwarePointRecord, source: LasSource) -> PointCloud:
    names = set(record.point_format.dimension_names)
    data: dict[str, np.ndarray] = {
        "x": np.asarray(record.x, dtype="f8"),
        "y": np.asarray(record.y, dtype="f8"),
        "z": np.asarray(record.z, dtype="f8"),
    }
    for field, name in _DIRECT_FIELDS.items():
        if field in names:
            data[name] = np.asarray(record[field])
    if "gps_time" in data and source.adjusted_gps_time:
        data["gps_time"] = data["gps_time"] + ADJUSTED_GPS_OFFSET
    if "scan_angle" in names:  # LAS 1.4 PF6+: 0.006 degree units
        data["scan_angle"] = np.asarray(record["scan_angle"], dtype="f4") * np.float32(0.006)
    elif "scan_angle_rank" in names:
        data["scan_angle"] = np.asarray(record["scan_angle_rank"], dtype="f4")
    for extra in record.point_format.extra_dimension_names:
        values = np.asarray(record[extra])
        if values.ndim == 1:
            data[extra] = values
    return PointCloud(data, source.crs)


def iter_chunks(
    path: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    crs: str | pyproj.CRS | None = None,
    bounds: Bounds | None = None,
) -> Iterator[PointCloud]:
    """Stream the file as clouds of at most ``chunk_size`` points (optionally only points inside ``bounds``).

    Raises :class:`InputError` for a truncated or corrupt file, or when the file holds fewer points than its
    header claims.
    """
    source = open_source(path, crs)
    if bounds is not None and source.is_copc:
        yield _read_copc(source, bounds)
        return
    seen = 0
    try:
        with laspy.open(source.path) as reader:
            for record in reader.chunk_iterator(chunk_size):
                seen += len(record)
                if len(record) == 0:
                    break
                cloud = _to_cloud(record, source)
                if bounds is not None:
                    cloud = cloud[_inside(cloud, bounds)]
                yield cloud
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - lazrs/laspy raise many types for corrupt data
        raise InputError(source.path, f"truncated or corrupt point data after {seen} points ({exc})") from None
    if seen != source.point_count:
        raise InputError(
            source.path, f"header says {source.point_count} points but the file holds {seen} (truncated?)"
        )


def _inside(cloud: PointCloud, b: Bounds) -> np.ndarray:
    x, y, z = cloud.x, cloud.y, cloud.z
    return (x >= b.minx) & (x <= b.maxx) & (y >= b.miny) & (y <= b.maxy) & (z >= b.minz) & (z <= b.maxz)


def _read_copc(source: LasSource, bounds: Bounds) -> PointCloud:
    # clamp to the file's extent: laspy turns query bounds into int32 point units, which infinite bounds overflow
    have = source.bounds
    mins = np.maximum([bounds.minx, bounds.miny, bounds.minz], [have.minx, have.miny, have.minz])
    maxs = np.minimum([bounds.maxx, bounds.maxy, bounds.maxz], [have.maxx, have.maxy, have.maxz])
    if np.any(mins > maxs):
        return PointCloud.empty(source.crs)
    query = laspy.copc.Bounds(mins=mins, maxs=maxs)
    try:
        with laspy.CopcReader.open(str(source.path)) as reader:
            record = reader.query(bounds=query)
    except Exception as exc:  # noqa: BLE001
        raise InputError(source.path, f"COPC query failed ({exc})") from None
    cloud = _to_cloud(record, source)
    return cloud[_inside(cloud, bounds)]


def read(
    path: str | Path, crs: str | pyproj.CRS | None = None, bounds: Bounds | None = None
) -> PointCloud:
    """Read a whole LAS/LAZ/COPC file (or the part inside ``bounds``) into a :class:`PointCloud`."""
    chunks = list(iter_chunks(path, crs=crs, bounds=bounds))
    if not chunks:
        return PointCloud.empty(open_source(path, crs).crs)
    return PointCloud.concat(chunks) if len(chunks) > 1 else chunks[0]


def _point_format(cloud: PointCloud) -> int:
    if cloud.has("nir"):
        return 8
    if cloud.has("red"):
        return 7
    return 6


_WRITTEN_ELSEWHERE = {"x", "y", "z", "scan_angle", "core", *_DIRECT_FIELDS}


def write(
    path: str | Path,
    cloud: PointCloud,
    *,
    scale: float = 0.001,
    crs: pyproj.CRS | None = None,
    creation_date: datetime.date | None = None,
) -> Path:
    """Write ``cloud`` as LAS 1.4 (LAZ when the suffix is .laz) atomically; returns the path.

    The point format is 6, 7 (RGB) or 8 (RGB + NIR); other dimensions become extra bytes. The CRS (``crs`` or
    the cloud's) is written as an OGC WKT VLR. ``gps_time`` holds GPS seconds (cim's time base); it is stored as
    adjusted standard GPS time (minus 1e9, global-encoding bit set) unless every value is below one week, which
    is then taken as GPS week seconds and stored as they are. Non-finite coordinates are refused.
    ``creation_date`` (default: today) is the header's file creation day; pipelines pass a fixed one so that
    re-runs are byte-identical.
    """
    path = Path(path)
    crs = crs or cloud.crs
    xyz = cloud.xyz
    if len(cloud) and not np.all(np.isfinite(xyz)):
        bad = int((~np.isfinite(xyz)).any(axis=1).sum())
        raise InputError(path, f"{bad} points have NaN or infinite coordinates; refusing to write them")
    header = laspy.LasHeader(point_format=_point_format(cloud), version="1.4")
    extras = [n for n in cloud.names if n not in _WRITTEN_ELSEWHERE]
    for name in extras:
        header.add_extra_dim(laspy.ExtraBytesParams(name=name, type=cloud[name].dtype))
    header.creation_date = creation_date or datetime.date.today()
    header.scales = np.array([scale, scale, scale])
    header.offsets = np.floor(xyz.min(axis=0)) if len(cloud) else np.zeros(3)
    if crs is not None:
        try:
            header.add_crs(crs)
        except Exception as exc:  # noqa: BLE001
            raise CrsError(f"cannot write CRS {crs_mod.describe(crs)} into {path}: {exc}") from None
    adjusted = cloud.has("gps_time") and len(cloud) > 0 and float(cloud["gps_time"].min()) >= SECONDS_PER_WEEK
    if adjusted:
        header.global_encoding.gps_time_type = laspy.header.GpsTimeType.STANDARD
    record = laspy.ScaleAwarePointRecord.zeros(len(cloud), header=header)
    record.x, record.y, record.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    for name in [*_DIRECT_FIELDS, *extras]:
        if cloud.has(name) and name in record.point_format.dimension_names:
            record[name] = cloud[name]
    if adjusted:
        record["gps_time"] = cloud["gps_time"] - ADJUSTED_GPS_OFFSET
    if cloud.has("scan_angle"):
        record["scan_angle"] = np.round(cloud["scan_angle"] / 0.006).astype("i2")
    with atomic_write(path) as tmp:
        with laspy.open(tmp, mode="w", header=header, do_compress=path.suffix.lower() == ".laz") as writer:
            writer.write_points(record)
    return path
