"""Georeferencing: pose tables -> panoramas placed in the job CRS, the panorama index and STAC items.

A :class:`Panorama` holds the camera centre in the job CRS (e.g. EPSG:25832 + DHHN2016 heights) and in WGS 84
(lon, lat, ellipsoidal height), and its orientation twice: ``quaternion`` is world_from_body in the job CRS's
grid frame (x east, y grid north, z up; what :mod:`cim.camera` projects with), ``quaternion_enu`` in the true
east-north-up frame at the camera (what CesiumJS / ECEF placement needs). They differ by the meridian convergence.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyproj
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from cim import camera
from cim import crs as cimcrs
from cim.errors import InputError
from cim.fileutil import atomic_write, write_text_atomic
from cim.panoramas.poses import PoseTable, Trajectory
from cim.panoramas.timebase import iso_from_gps

__all__ = ["Panorama", "georeference", "grid_convergence", "load_panoramas", "write_index", "write_panoramas_json"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Panorama:
    """One georeferenced panorama (plain values; JSON round-trips through :meth:`to_dict`)."""

    name: str
    gps_time: float
    datetime: str
    position: tuple[float, float, float]  # job CRS
    crs: str  # job CRS as "EPSG:25832+7837" or WKT
    lon: float
    lat: float
    h_ell: float
    quaternion: tuple[float, float, float, float]  # world_from_body, grid frame of the job CRS
    quaternion_enu: tuple[float, float, float, float]  # world_from_body, true east-north-up
    image: str | None = None
    width: int | None = None
    height: int | None = None
    products: dict[str, str] = field(default_factory=dict)

    @property
    def pose(self) -> camera.Pose:
        """The camera pose in the job CRS (for :func:`cim.camera.project_points`)."""
        return camera.Pose(np.asarray(self.position, dtype=np.float64), np.asarray(self.quaternion))

    @property
    def angles(self) -> tuple[float, float, float]:
        """(heading, pitch, roll) in degrees relative to grid north of the job CRS."""
        return self.pose.angles

    @property
    def angles_true(self) -> tuple[float, float, float]:
        """(heading, pitch, roll) in degrees relative to true north."""
        h, p, r = camera.angles_from_quaternion(np.asarray(self.quaternion_enu))
        return float(h), float(p), float(r)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["products"] = dict(sorted(self.products.items()))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Panorama:
        d = dict(d)
        for key in ("position", "quaternion", "quaternion_enu"):
            d[key] = tuple(float(v) for v in d[key])
        return cls(**d)

    def with_products(self, **products: str) -> Panorama:
        merged = {**self.products, **products}
        return Panorama(**{**asdict(self), "products": merged})


def grid_convergence(job_crs: pyproj.CRS, lon: FloatArray, lat: FloatArray) -> FloatArray:
    """Grid azimuth (degrees, clockwise from grid north) of the true-north direction at lon/lat.

    A direction with true azimuth A has grid azimuth A + grid_convergence (PROJ: -0.93° at Kaiserslautern in
    UTM 32N). Computed numerically from the projection, so its sign cannot be mixed up.
    """
    horizontal = cimcrs.horizontal_part(job_crs)
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    if horizontal.is_geographic:
        return np.zeros_like(lon)
    tr = pyproj.Transformer.from_crs(4326, horizontal, always_xy=True)
    d = 1e-5
    x0, y0 = cimcrs.transform_points(tr, lon, lat)
    x1, y1 = cimcrs.transform_points(tr, lon, lat + d)
    return np.degrees(np.arctan2(x1 - x0, y1 - y0))


def _rotate_about_up(q: FloatArray, degrees_clockwise: FloatArray) -> FloatArray:
    """Quaternions of world_from_body after turning the world frame by ``degrees_clockwise`` about up."""
    turn = Rotation.from_euler("z", -np.asarray(degrees_clockwise, dtype=np.float64).reshape(-1, 1), degrees=True)
    out = (turn * Rotation.from_quat(q, scalar_first=True)).as_quat(scalar_first=True)
    return np.where(out[:, :1] < 0, -out, out)


def _crs_hint(table: PoseTable, i: int) -> str:
    """For poses in longitude/latitude: the --crs to give (the WGS 84 / UTM zone of panorama ``i``)."""
    if not table.crs.is_geographic or not table.has_position[i]:
        return "; give the job CRS with --crs"
    lon, lat = (float(v) for v in table.position[i][:2])
    zone = int((lon + 180) // 6) % 60 + 1
    return (f"; the poses lie at {lon:.4f}, {lat:.4f}: give --crs EPSG:{32600 + zone if lat >= 0 else 32700 + zone} "
            f"(WGS 84 / UTM zone {zone}{'N' if lat >= 0 else 'S'}) or the national CRS there")


def georeference(
    table: PoseTable,
    job_crs: str | pyproj.CRS,
    *,
    trajectory: Trajectory | None = None,
    images: dict[str, Path] | None = None,
    max_gap: float = 1.0,
    strict_images: bool = True,
) -> list[Panorama]:
    """Place every row of ``table`` in ``job_crs``.

    Missing positions or orientations are interpolated from ``trajectory`` by GPS time (an
    :class:`InputError` when the trajectory does not cover a panorama; never extrapolates). Heights are exact:
    ellipsoidal <-> DHHN2016 (or any vertical CRS) go through :func:`cim.crs.to_geographic3d`, which refuses
    PROJ's ballpark fallback. ``images`` maps panorama names to image files (dimensions read from the header;
    an unreadable header is an error, or leaves the size unknown with ``strict_images=False``).
    """
    crs = cimcrs.resolve(job_crs)
    to_geo = cimcrs.to_geographic3d(crs)  # job -> EPSG:4979; raises CrsError on a ballpark vertical
    src = table.source or "poses"
    n = len(table)
    pos_job = np.full((n, 3), np.nan)
    geo = np.full((n, 3), np.nan)
    q = table.quaternion.copy()
    north = np.full(n, table.north)
    have = table.has_position
    if have.any():
        p = table.position[have]
        if table.crs.is_geographic:
            geo[have] = p
            x, y, z = cimcrs.transform_points(to_geo, *p.T, direction="INVERSE")
            pos_job[have] = np.column_stack([x, y, z])
        else:
            pos_job[have] = _transform(table.crs, crs, p, src)
            lon, lat, h = cimcrs.transform_points(to_geo, *pos_job[have].T)
            geo[have] = np.column_stack([lon, lat, h])
    need = ~have | ~table.has_orientation
    if need.any():
        if trajectory is None:
            i = int(np.flatnonzero(need)[0])
            what = "position" if not have[i] else "orientation"
            raise InputError(src, f"panorama {table.names[i]!r} has no {what}; give a trajectory to interpolate it")
        if not np.isfinite(table.gps_time[need]).all():
            raise InputError(src, "panoramas without a pose need a GPS time to interpolate the trajectory")
        traj = trajectory
        if traj.crs.is_geographic:
            traj = traj.to_crs(crs, _InverseOf(to_geo))
        elif not traj.crs.equals(crs):
            traj = traj.to_crs(crs, pyproj.Transformer.from_crs(traj.crs, crs, always_xy=True))
        tp, tq = traj.interpolate(table.gps_time[need], max_gap=max_gap)
        fill_pos = need & ~have
        sel = fill_pos[need]
        pos_job[fill_pos] = tp[sel]
        if fill_pos.any():
            lon, lat, h = to_geo.transform(*tp[sel].T)
            geo[fill_pos] = np.column_stack([lon, lat, h])
        fill_rot = need & ~table.has_orientation
        if fill_rot.any():
            if tq is None:
                i = int(np.flatnonzero(fill_rot)[0])
                raise InputError(traj.source or "trajectory",
                                 f"has no attitude, so panorama {table.names[i]!r} gets no orientation")
            q[fill_rot] = tq[fill_rot[need]]
            north[fill_rot] = traj.north
    bad = ~np.isfinite(pos_job).all(axis=1) | ~np.isfinite(geo).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(src, f"panorama {table.names[i]!r} cannot be placed in {cimcrs.describe(crs)} "
                         f"(outside the CRS's area or its height grid){_crs_hint(table, i)}")
    conv = grid_convergence(crs, geo[:, 0], geo[:, 1])
    is_true = north == "true"
    q_grid = np.where(is_true[:, None], _rotate_about_up(q, conv), q)
    q_enu = np.where(is_true[:, None], q, _rotate_about_up(q, -conv))
    label = cimcrs.code(crs) or crs.to_wkt()
    out = []
    for i, name in enumerate(table.names):
        image = images.get(name) if images else None
        w = h = None
        if image is not None:
            try:
                w, h = image_size(image)
            except InputError:
                if strict_images:
                    raise
        out.append(Panorama(
            name=name, gps_time=float(table.gps_time[i]),
            datetime=iso_from_gps(table.gps_time[i]) if np.isfinite(table.gps_time[i]) else "",
            position=tuple(float(v) for v in pos_job[i]), crs=label,
            lon=float(geo[i, 0]), lat=float(geo[i, 1]), h_ell=float(geo[i, 2]),
            quaternion=tuple(float(v) for v in q_grid[i]), quaternion_enu=tuple(float(v) for v in q_enu[i]),
            image=str(image) if image is not None else None, width=w, height=h,
        ))
    return out


class _InverseOf:
    """Adapter: a transformer's inverse direction with a ``transform`` method (EPSG:4979 -> job CRS)."""

    def __init__(self, transformer: pyproj.Transformer) -> None:
        self._t = transformer

    def transform(self, x, y, z):
        return cimcrs.transform_points(self._t, x, y, z, direction="INVERSE")


def _transform(src: pyproj.CRS, dst: pyproj.CRS, p: FloatArray, source: str) -> FloatArray:
    if src.equals(dst):
        return p.copy()
    # Through EPSG:4979 on both sides so the exact-height guard of cim.crs applies to each vertical datum.
    lon, lat, h = cimcrs.transform_points(cimcrs.to_geographic3d(src), *p.T)
    x, y, z = cimcrs.transform_points(cimcrs.to_geographic3d(dst), lon, lat, h, direction="INVERSE")
    return np.column_stack([x, y, z])


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from an image header without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable image ({exc})") from None


#: End markers of JPEG and PNG: a file whose last bytes hold its marker was written whole.
_IMAGE_END = {b"\xff\xd8": b"\xff\xd9", b"\x89PNG": b"IEND\xaeB`\x82"}


def check_complete(path: str | Path) -> None:
    """Refuse an image file cut short (OpenCV decodes a truncated JPEG silently, the rest grey).

    A JPEG or PNG whose last 4 KiB hold its end marker passes at once; any other file (or one with a long trailer
    after the marker) is decoded once by Pillow, which raises on truncated data.
    """
    from PIL import Image

    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, handle.seek(0, 2) - 4096))
        tail = handle.read()
    if any(head.startswith(start) and end in tail for start, end in _IMAGE_END.items()):
        return
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(path, f"the image does not decode completely ({exc})") from None


# --- index -------------------------------------------------------------------------------------------------------

def write_index(panoramas: list[Panorama], path: str | Path) -> Path:
    """Write the panorama index as points (Point Z, job CRS): FlatGeobuf (``.fgb``) or GeoPackage (``.gpkg``)."""
    from pyogrio.raw import write as ogr_write
    import shapely

    path = Path(path)
    driver = {".fgb": "FlatGeobuf", ".gpkg": "GPKG"}.get(path.suffix.lower())
    if driver is None:
        raise ValueError(f"index must end in .fgb or .gpkg, got {path.name}")
    if not panoramas:
        raise ValueError("no panoramas to index")
    crs = cimcrs.resolve(panoramas[0].crs)
    pts = shapely.points(np.array([p.position for p in panoramas]))
    heading, pitch, roll = np.array([p.angles for p in panoramas]).T
    heading_true = np.array([p.angles_true[0] for p in panoramas])
    fields = {
        "name": np.array([p.name for p in panoramas], dtype=object),
        "datetime": np.array([p.datetime for p in panoramas], dtype=object),
        "gps_time": np.array([p.gps_time for p in panoramas]),
        "lon": np.array([p.lon for p in panoramas]),
        "lat": np.array([p.lat for p in panoramas]),
        "h_ell": np.array([p.h_ell for p in panoramas]),
        "heading": heading, "pitch": pitch, "roll": roll, "heading_true": heading_true,
        "qw": np.array([p.quaternion[0] for p in panoramas]), "qx": np.array([p.quaternion[1] for p in panoramas]),
        "qy": np.array([p.quaternion[2] for p in panoramas]), "qz": np.array([p.quaternion[3] for p in panoramas]),
        "width": np.array([p.width or 0 for p in panoramas], dtype=np.int32),
        "height": np.array([p.height or 0 for p in panoramas], dtype=np.int32),
        "tiles": np.array([p.products.get("tiles", "") for p in panoramas], dtype=object),
        "depth": np.array([p.products.get("depth", "") for p in panoramas], dtype=object),
        "image": np.array([p.products.get("image", "") for p in panoramas], dtype=object),
    }
    with atomic_write(path) as tmp:
        ogr_write(tmp, shapely.to_wkb(pts), field_data=list(fields.values()), fields=list(fields),
                      geometry_type="Point Z", crs=crs.to_wkt(), driver=driver, layer="panoramas")
    return path


def write_panoramas_json(panoramas: list[Panorama], path: str | Path) -> Path:
    """Write the panoramas as JSON (what :func:`load_panoramas` and :func:`cim.panoramas.measure` read)."""
    doc = {"panoramas": [p.to_dict() for p in sorted(panoramas, key=lambda p: p.name)]}
    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return Path(path)


def load_panoramas(path: str | Path) -> list[Panorama]:
    """Read ``panoramas.json`` written by :func:`write_panoramas_json` (paths inside resolve against its folder)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        panos = [Panorama.from_dict(d) for d in doc["panoramas"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a cim panoramas.json ({exc})") from None
    root = path.parent.resolve()
    return [Panorama(**{**asdict(p), "products": {k: str(root / v) for k, v in p.products.items()}}) for p in panos]
