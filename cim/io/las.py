"""LAS / LAZ / COPC reading (chunked, by bounds) and writing, with laspy + lazrs.

Every problem with a file is raised as :class:`cim.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import datetime
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import laspy
import numpy as np
import pyproj

from cim import crs as crs_mod
from cim.errors import CrsError, InputError
from cim.fileutil import atomic_write
from cim.io.las_header import check_header
from cim.io.las_crs import header_crs
from cim.io.readers import inside
from cim.points import INPUT_INDEX, INPUT_POSITION, STANDARD_DTYPES, Bounds, PointCloud

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

#: LAS flags and small fields kept under laspy's names (bool, except the 2-bit scanner channel: u1). The
#: overlap flag and the scanner channel exist in point formats 6-10 only.
FLAG_FIELDS = ("synthetic", "key_point", "withheld", "overlap", "scanner_channel", "scan_direction_flag",
               "edge_of_flight_line")


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

    @property
    def acquired(self) -> datetime.date | None:
        """The header's creation date (None when unset)."""
        date = self.header.creation_date
        return date if date and date.year > 1970 else None

    #: Any point range can be read on its own (LAS by offset; LAZ and COPC through the chunk table).
    seekable = True

    def schema_cloud(self) -> PointCloud:
        """One zero point with the dimensions :meth:`chunks` yields, from the header alone (nothing decoded)."""
        return _to_cloud(laspy.ScaleAwarePointRecord.zeros(1, header=self.header), self)

    def chunks(self, chunk_size: int = DEFAULT_CHUNK, bounds: Bounds | None = None,
               points: range | None = None) -> Iterator[PointCloud]:
        """The points in chunks (see :func:`iter_chunks`; a COPC file answers ``bounds`` with one query unless
        ``points`` names a range)."""
        return iter_chunks(self.path, chunk_size, self.crs, bounds, points)


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
    for field in FLAG_FIELDS:
        if field in names:
            data[field] = np.asarray(record[field]).astype(STANDARD_DTYPES[field])
    if "gps_time" in data and source.adjusted_gps_time:
        data["gps_time"] = data["gps_time"] + ADJUSTED_GPS_OFFSET
    if "scan_angle" in names:  # LAS 1.4 PF6+: 0.006 degree units
        data["scan_angle"] = np.asarray(record["scan_angle"], dtype="f4") * np.float32(0.006)
    elif "scan_angle_rank" in names:
        data["scan_angle"] = np.asarray(record["scan_angle_rank"], dtype="f4")
    data.update(_extra_dims(record, source.header))
    return PointCloud(data, source.crs)


def extra_bytes_params(header: laspy.LasHeader) -> list[laspy.ExtraBytesParams]:
    """Every single-valued extra dimension the header describes, with its type, description, scale, offset and
    no-data value, from all its ExtraBytes VLRs in order (laspy itself reads only the first VLR)."""
    params = []
    for vlr in header.vlrs:
        if not isinstance(vlr, laspy.vlrs.known.ExtraBytesVlr):
            continue
        for struct in vlr.extra_bytes_structs:
            if struct.data_type == 0 or struct.num_elements() != 1:
                params.append(None)  # undocumented bytes or an array: kept only as laspy exposes it
                continue
            params.append(laspy.ExtraBytesParams(
                name=struct.name.rstrip(b"\0").decode("ascii", "replace"), type=struct.dtype(),
                description=struct.description.rstrip(b"\0").decode("ascii", "replace"),
                offsets=_option(struct.offset), scales=_option(struct.scale), no_data=_option(struct.no_data)))
    return params


def _option(value: object) -> np.ndarray | None:
    return None if value is None else np.atleast_1d(np.asarray(value, dtype="f8"))


def _extra_dims(record: laspy.ScaleAwarePointRecord, header: laspy.LasHeader) -> dict[str, np.ndarray]:
    """The extra dimensions of ``record`` by name (scaled values as float64, raw ones in their own type).

    When the ExtraBytes VLRs describe exactly the record's extra bytes, every described dimension is decoded from
    them; otherwise the single-valued dimensions laspy decodes are kept."""
    params = extra_bytes_params(header)
    size = record.point_format.num_extra_bytes
    if (params and None not in params and len({p.name for p in params}) == len(params)
            and sum(np.dtype(p.type).itemsize for p in params) == size):
        array = np.ascontiguousarray(record.array)
        rows = array.view(np.uint8).reshape(len(record), array.dtype.itemsize)
        raw = np.ascontiguousarray(rows[:, rows.shape[1] - size:])
        fields = np.dtype([(p.name, np.dtype(p.type).newbyteorder("<")) for p in params])
        table = raw.view(fields).reshape(-1)
        data = {}
        for p in params:
            values = table[p.name].astype(np.dtype(p.type).newbyteorder("="))
            if p.scales is not None or p.offsets is not None:
                scale = p.scales[0] if p.scales is not None else 1.0
                offset = p.offsets[0] if p.offsets is not None else 0.0
                values = values * scale + offset
            data[p.name] = values
        return data
    data = {}
    for extra in record.point_format.extra_dimension_names:
        values = np.asarray(record[extra])
        if values.ndim == 1:
            data[extra] = values
    return data


def iter_chunks(
    path: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    crs: str | pyproj.CRS | None = None,
    bounds: Bounds | None = None,
    points: range | None = None,
) -> Iterator[PointCloud]:
    """Stream the file as clouds of at most ``chunk_size`` points (optionally only points inside ``bounds``).

    ``points``: only the points of this index range (step 1), read from its first point on: LAS seeks to its
    offset, LAZ (COPC too) to the compressed chunk holding it through the file's chunk table, so a range costs
    its own points plus at most one compressed chunk. Chunks start at the range's start.

    Raises :class:`InputError` for a truncated or corrupt file, or when the file holds fewer points than its
    header claims.
    """
    source = open_source(path, crs)
    if bounds is not None and source.is_copc and points is None:
        yield _read_copc(source, bounds)
        return
    points = points if points is not None else range(source.point_count)
    if points.step != 1 or points.start < 0 or points.stop > source.point_count:
        raise ValueError(f"point range {points} is not a contiguous range of the file's {source.point_count}")
    seen = 0
    try:
        for record in _compressed_range(source, points, chunk_size) if source.header.are_points_compressed else \
                _records(source.path, points, chunk_size):
            seen += len(record)
            if len(record) == 0:
                break
            cloud = _to_cloud(record, source)
            if bounds is not None:
                cloud = cloud[inside(cloud, bounds)]
            yield cloud
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - lazrs/laspy raise many types for corrupt data
        raise InputError(source.path, f"truncated or corrupt point data after {seen} points ({exc})") from None
    if seen != len(points):
        raise InputError(
            source.path, f"header says {source.point_count} points but the file holds {points.start + seen} "
                         "(truncated?)"
        )


def _records(path: Path, points: range, chunk_size: int) -> Iterator[laspy.ScaleAwarePointRecord]:
    """The records of ``points`` in chunks, read from its first point on by laspy: a LAS file seeks there; a LAZ
    file without a usable chunk table is decoded in sequence from its start (lazrs' parallel decoder needs the
    table; LAZ files that have one are read by :func:`_compressed_range`)."""
    with laspy.open(path, laz_backend=laspy.LazBackend.Lazrs) as reader:
        if points.start:
            reader.seek(points.start)
        for start in range(points.start, points.stop, chunk_size):
            yield reader.read_points(min(chunk_size, points.stop - start))


def _compressed_range(source: LasSource, points: range, chunk_size: int) -> Iterator[laspy.ScaleAwarePointRecord]:
    """The records of ``points`` in chunks, from a LAZ file through its chunk table: only the compressed chunks
    that hold the range's points are read and decompressed (fixed-size chunks, and COPC's variable-size ones,
    where lazrs' own seek misplaces the stream), a few at a time (:func:`_decompress`). A file without a chunk
    table that fits its point data (none, a truncated or a damaged one) is read from its start by laspy, which
    decodes it in sequence; a range that does not start there cannot be found in it (InputError)."""
    import lazrs

    header = source.header
    vlr = lazrs.LazVlr(header.vlrs.get("LasZipVlr")[0].record_data)  # still in a header that read no points
    with open(source.path, "rb") as file:
        table = _chunk_table(file, vlr, source)
        if table is None:
            if points.start:
                raise InputError(source.path, "its LAZ chunk table is missing or damaged: a range of its points "
                                              "cannot be found (rewrite the file, e.g. with laszip or PDAL)")
            yield from _records(source.path, points, chunk_size)
            return
        # a fixed-size table states the nominal count of the last chunk too: clip the firsts to the file's points
        first = np.minimum(np.concatenate([[0], np.cumsum([n for n, _ in table], dtype=np.int64)]), source.point_count)
        offsets = file.tell() + np.concatenate([[0], np.cumsum([b for _, b in table], dtype=np.int64)])
        decoded, at = np.zeros(0, header.point_format.dtype()), 0  # decompressed points from point ``at`` on
        for start in range(points.start, points.stop, chunk_size):
            stop = min(start + chunk_size, points.stop)
            if stop > at + len(decoded):  # decompress the compressed chunks c0 .. c1-1, which hold [start, stop)
                c0 = int(np.searchsorted(first, start, side="right")) - 1
                c1 = int(np.searchsorted(first, stop, side="left"))
                file.seek(int(offsets[c0]))
                compressed = file.read(int(offsets[c1] - offsets[c0]))
                out = np.zeros(int(first[c1] - first[c0]) * header.point_format.size, np.uint8)
                sizes = [(int(first[c + 1] - first[c]), int(table[c][1])) for c in range(c0, c1)]
                _decompress(compressed, vlr.record_data(), out, sizes, header.point_format.size)
                decoded, at = laspy.PackedPointRecord.from_buffer(out, header.point_format).array, int(first[c0])
            array = decoded[start - at:stop - at]
            yield laspy.ScaleAwarePointRecord(array, header.point_format, header.scales, header.offsets)


def _chunk_table(file: BinaryIO, vlr: Any, source: LasSource) -> list[tuple[int, int]] | None:
    """The (points, bytes) of each compressed chunk from the file's LAZ chunk table, ``file`` left at the first
    chunk; None where there is no table that fits the point data: unreadable, a chunk of no points or bytes, more
    bytes than lie between the points' start and the table, or fewer points than the header's."""
    import lazrs

    file.seek(source.header.offset_to_point_data)
    (table_at,) = struct.unpack("<q", file.read(8))
    file.seek(source.header.offset_to_point_data)
    try:
        table = lazrs.read_chunk_table(file, vlr)
    except (lazrs.LazrsError, OSError, ValueError):
        return None
    fits = bool(table) and all(n > 0 and b > 0 for n, b in table) and \
        sum(b for _, b in table) <= table_at - file.tell() and sum(n for n, _ in table) >= source.point_count
    return table if fits else None


def _decompress(compressed: bytes, record_data: bytes, out: np.ndarray, sizes: list[tuple[int, int]],
                point_size: int) -> None:
    """Decompress consecutive LAZ chunks (``sizes``: points and bytes of each) into ``out``: in one call, on
    every core, where the task may use several threads; else a few chunks per call, decoded side by side on the
    threads a call holding the GIL may use (:func:`cim.threads.gil_threads`: one in a worker process, every core
    under the threads scheduler). lazrs holds the GIL during a call, and the other tasks of the threads scheduler
    stand still meanwhile: laspy's decoder held it for a read of 1 M points (0.25 s). Short calls on every core
    let them run in between (the bcts partition phase on 2 threads: 1.3 -> 0.8 s)."""
    import lazrs

    from cim.threads import gil_threads, task_threads

    selection = lazrs.DecompressionSelection(lazrs.SELECTIVE_DECOMPRESS_ALL)
    group = max(1, len(sizes) if task_threads() > 1 else gil_threads())
    view, at_byte, at_point = memoryview(compressed), 0, 0
    for first in range(0, len(sizes), group):
        part = sizes[first:first + group]
        points, size = sum(n for n, _ in part), sum(b for _, b in part)
        lazrs.decompress_points_with_chunk_table(view[at_byte:at_byte + size], record_data,
                                                 out[at_point * point_size:(at_point + points) * point_size],
                                                 part, selection)
        at_byte, at_point = at_byte + size, at_point + points


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
    return cloud[inside(cloud, bounds)]


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


#: Dimensions that are not extra bytes: the record's own fields and cim's internal ones (never written).
_WRITTEN_ELSEWHERE = {"x", "y", "z", "scan_angle", "core", INPUT_INDEX, INPUT_POSITION, *_DIRECT_FIELDS,
                      *FLAG_FIELDS}


def write(
    path: str | Path,
    points: PointCloud | Iterable[PointCloud],
    *,
    scale: float | np.ndarray = 0.001,
    crs: pyproj.CRS | None = None,
    creation_date: datetime.date | None = None,
    extra_bytes: Iterable[laspy.ExtraBytesParams | None] = (),
    offsets: np.ndarray | None = None,
    adjusted_gps_time: bool | None = None,
) -> Path:
    """Write ``points`` as LAS 1.4 (LAZ when the suffix is .laz) atomically; returns the path.

    ``points`` is one cloud or an iterable of chunks (at least one, all with the same dimensions), written in their
    order holding one chunk at a time; the first chunk settles the encoding below and the header's counts and
    bounds cover all of them.

    The point format is 6, 7 (RGB) or 8 (RGB + NIR), which hold every field and flag of formats 0-5 as well;
    other dimensions become extra bytes, described as in ``extra_bytes`` (e.g. :func:`extra_bytes_params` of
    the source file: type, description, scale, offset, no-data) when it names them. The CRS (``crs`` or
    the cloud's) is written as an OGC WKT VLR. ``scale`` (one or per axis) and ``offsets`` (default: the floor
    of the minimum) set the coordinate grid. ``gps_time`` holds GPS seconds (cim's time base); it is stored as
    adjusted standard GPS time (minus 1e9, global-encoding bit set) when ``adjusted_gps_time`` says so, by
    default unless every value is below one week, which is then taken as GPS week seconds and stored as they
    are. Non-finite coordinates are refused. ``creation_date`` (default: today) is the header's file creation
    day; pipelines pass a fixed one so that re-runs are byte-identical.
    """
    path = Path(path)
    with atomic_write(path) as tmp, contextlib.ExitStack() as stack:
        writer = None
        for cloud in [points] if isinstance(points, PointCloud) else points:
            xyz = cloud.xyz
            if len(cloud) and not np.all(np.isfinite(xyz)):
                bad = int((~np.isfinite(xyz)).any(axis=1).sum())
                raise InputError(path, f"{bad} points have NaN or infinite coordinates; refusing to write them")
            if writer is None:
                if offsets is None:
                    offsets = np.floor(xyz.min(axis=0)) if len(cloud) else np.zeros(3)
                try:
                    header, record = to_record(cloud, scale=scale, offsets=offsets, crs=crs,
                                               creation_date=creation_date, extra_bytes=extra_bytes,
                                               adjusted_gps_time=adjusted_gps_time)
                except CrsError as exc:
                    raise CrsError(f"{exc} (writing {path})") from None
                names = set(cloud.names)
                adjusted = header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD
                writer = stack.enter_context(laspy.open(tmp, mode="w", header=header,
                                                        do_compress=path.suffix.lower() == ".laz"))
                _no_extra_bytes_range(writer.header)
            elif set(cloud.names) != names:
                raise ValueError(f"{path}: a chunk's dimensions {sorted(cloud.names)} differ from {sorted(names)}")
            else:
                record = _record(cloud, header, adjusted)
            writer.write_points(record)
        if writer is None:
            raise ValueError(f"{path}: no chunk to write")
    return path


def _no_extra_bytes_range(header: laspy.LasHeader) -> None:
    """Leave the extra dimensions' min / max out of the header: laspy 2.7 records the first point's value of each
    write as both, so the file would depend on the chunking and state wrong ranges."""
    for vlr in header.vlrs.get("ExtraBytesVlr"):
        for struct in vlr.extra_bytes_structs:
            struct.options &= ~(struct.MIN_BIT_MASK | struct.MAX_BIT_MASK)


def to_record(
    cloud: PointCloud,
    *,
    scale: float | np.ndarray,
    offsets: np.ndarray,
    crs: pyproj.CRS | None = None,
    creation_date: datetime.date | None = None,
    extra_bytes: Iterable[laspy.ExtraBytesParams | None] = (),
    adjusted_gps_time: bool | None = None,
) -> tuple[laspy.LasHeader, laspy.ScaleAwarePointRecord]:
    """A LAS 1.4 header and point record holding ``cloud`` (the encoding :func:`write` describes)."""
    if adjusted_gps_time is None:
        times = cloud.get("gps_time")
        adjusted_gps_time = times is not None and len(times) > 0 and float(times.min()) >= SECONDS_PER_WEEK
    header = _header(cloud, scale, offsets, adjusted_gps_time, crs or cloud.crs, creation_date, extra_bytes)
    return header, _record(cloud, header, adjusted_gps_time)


def _header(cloud: PointCloud, scale: float | np.ndarray, offsets: np.ndarray, adjusted: bool,
            crs: pyproj.CRS | None, creation_date: datetime.date | None,
            extra_bytes: Iterable[laspy.ExtraBytesParams | None]) -> laspy.LasHeader:
    header = laspy.LasHeader(point_format=_point_format(cloud), version="1.4")
    described = {p.name: p for p in extra_bytes if p is not None}
    for name in (n for n in cloud.names if n not in _WRITTEN_ELSEWHERE):
        header.add_extra_dim(described.get(name) or laspy.ExtraBytesParams(name=name, type=cloud[name].dtype))
    header.creation_date = creation_date or datetime.date.today()
    header.scales = np.broadcast_to(np.asarray(scale, dtype="f8"), 3).copy()
    header.offsets = np.asarray(offsets, dtype="f8")
    if crs is not None:
        try:
            header.add_crs(crs)
        except Exception as exc:  # noqa: BLE001
            raise CrsError(f"cannot write CRS {crs_mod.describe(crs)}: {exc}") from None
    if adjusted:
        header.global_encoding.gps_time_type = laspy.header.GpsTimeType.STANDARD
    return header


def _record(cloud: PointCloud, header: laspy.LasHeader, adjusted: bool) -> laspy.ScaleAwarePointRecord:
    xyz = cloud.xyz
    record = laspy.ScaleAwarePointRecord.zeros(len(cloud), header=header)
    record.x, record.y, record.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    extras = [n for n in cloud.names if n not in _WRITTEN_ELSEWHERE]
    for name in [*_DIRECT_FIELDS, *FLAG_FIELDS, *extras]:
        if cloud.has(name) and name in record.point_format.dimension_names:
            record[name] = cloud[name]
    if adjusted and cloud.has("gps_time"):
        record["gps_time"] = cloud["gps_time"] - ADJUSTED_GPS_OFFSET
    if cloud.has("scan_angle"):
        record["scan_angle"] = np.round(cloud["scan_angle"] / 0.006).astype("i2")
    return record
