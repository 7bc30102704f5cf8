"""The point-cloud value: named numpy arrays plus a CRS (numpy-first, in the spirit of laspy)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyproj

if TYPE_CHECKING:  # heavy optional imports, made only by the methods that need them
    import open3d
    import pandas
    import pyvista
    import shapely

#: Standard dimensions and their dtypes. Any other name is an extra dimension of any numeric dtype.
STANDARD_DTYPES: dict[str, np.dtype] = {
    "x": np.dtype("f8"),
    "y": np.dtype("f8"),
    "z": np.dtype("f8"),
    "intensity": np.dtype("u2"),
    "return_number": np.dtype("u1"),
    "number_of_returns": np.dtype("u1"),
    "classification": np.dtype("u1"),
    "scan_angle": np.dtype("f4"),
    "user_data": np.dtype("u1"),
    "point_source_id": np.dtype("u2"),
    "gps_time": np.dtype("f8"),
    "red": np.dtype("u2"),
    "green": np.dtype("u2"),
    "blue": np.dtype("u2"),
    "nir": np.dtype("u2"),
    "synthetic": np.dtype("?"),
    "key_point": np.dtype("?"),
    "withheld": np.dtype("?"),
    "overlap": np.dtype("?"),
    "scanner_channel": np.dtype("u1"),
    "scan_direction_flag": np.dtype("?"),
    "edge_of_flight_line": np.dtype("?"),
    "core": np.dtype("?"),
    "input_index": np.dtype("u4"),
    "input_position": np.dtype("u8"),
}

#: Internal dimensions: the number of the input file a point came from (in the job's input order) and the point's
#: position in that file; carried only when a stage needs them (``write.las`` with ``per_source``).
INPUT_INDEX = "input_index"
INPUT_POSITION = "input_position"


class Bounds(NamedTuple):
    """Axis-aligned 3D bounds."""

    minx: float
    miny: float
    minz: float
    maxx: float
    maxy: float
    maxz: float

    @property
    def xy(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy)."""
        return (self.minx, self.miny, self.maxx, self.maxy)

    @classmethod
    def union(cls, boxes: Iterable[Bounds]) -> Bounds:
        """The bounds covering all ``boxes`` (at least one)."""
        table = np.array(list(boxes), dtype=float).reshape(-1, 6)
        return cls(*map(float, table[:, :3].min(axis=0)), *map(float, table[:, 3:].max(axis=0)))


class PointCloud:
    """Points as named, equally long numpy arrays and the CRS they are given in.

    ``x``, ``y``, ``z`` are float64 in the source CRS. Attributes are reached as ``pc.intensity`` or
    ``pc["intensity"]``; ``pc[mask]`` selects points and returns a new cloud sharing no arrays with this one.
    """

    __slots__ = ("_data", "crs")

    def __init__(self, data: dict[str, np.ndarray], crs: pyproj.CRS | None = None) -> None:
        for name in ("x", "y", "z"):
            if name not in data:
                raise ValueError(f"a point cloud needs an {name!r} array")
        n = len(data["x"])
        self._data: dict[str, np.ndarray] = {}
        for name, values in data.items():
            self._data[name] = _coerce(name, values, n)
        self.crs = crs

    # construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_xyz(cls, xyz: np.ndarray, crs: pyproj.CRS | None = None, **attributes: np.ndarray) -> PointCloud:
        """A cloud from an (n, 3) coordinate array and optional named attributes."""
        xyz = np.asarray(xyz, dtype="f8").reshape(-1, 3)
        return cls({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], **attributes}, crs)

    @classmethod
    def empty(cls, crs: pyproj.CRS | None = None, names: Iterable[str] = ()) -> PointCloud:
        """A cloud with no points (and the given dimensions)."""
        data = {n: np.empty(0, STANDARD_DTYPES.get(n, np.dtype("f8"))) for n in ("x", "y", "z", *names)}
        return cls(data, crs)

    @classmethod
    def concat(cls, clouds: Iterable[PointCloud]) -> PointCloud:
        """Concatenate clouds that share CRS and dimension names."""
        clouds = list(clouds)
        if not clouds:
            raise ValueError("nothing to concatenate")
        names = clouds[0].names
        for other in clouds[1:]:
            if other.names != names:
                raise ValueError(f"clouds differ in dimensions: {names} vs {other.names}")
        data = {n: np.concatenate([c._data[n] for c in clouds]) for n in names}
        return cls(data, clouds[0].crs)

    # access -------------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Dimension names in storage order."""
        return list(self._data)

    def has(self, name: str) -> bool:
        """Whether the cloud has dimension ``name``."""
        return name in self._data

    def get(self, name: str, default: np.ndarray | None = None) -> np.ndarray | None:
        """The array ``name`` or ``default``."""
        return self._data.get(name, default)

    def set(self, name: str, values: np.ndarray | float | int | bool) -> None:
        """Add or replace dimension ``name`` (scalars are broadcast)."""
        self._data[name] = _coerce(name, values, len(self))

    def drop(self, name: str) -> None:
        """Remove dimension ``name`` if present."""
        self._data.pop(name, None)

    @property
    def data(self) -> dict[str, np.ndarray]:
        """The underlying name → array mapping (not a copy)."""
        return self._data

    def __getitem__(self, key: str | np.ndarray | slice) -> np.ndarray | PointCloud:
        if isinstance(key, str):
            return self._data[key]
        return PointCloud({n: v[key] for n, v in self._data.items()}, self.crs)

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        return len(self._data["x"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __repr__(self) -> str:
        crs = self.crs.to_string() if self.crs is not None else "no CRS"
        return f"PointCloud({len(self)} points, {', '.join(self.names)}; {crs})"

    @property
    def xyz(self) -> np.ndarray:
        """Coordinates as a new (n, 3) float64 array."""
        return np.column_stack([self._data["x"], self._data["y"], self._data["z"]])

    @property
    def bounds(self) -> Bounds:
        """Tight bounds of the points (NaN bounds for an empty cloud)."""
        if len(self) == 0:
            return Bounds(*([float("nan")] * 6))
        x, y, z = self._data["x"], self._data["y"], self._data["z"]
        return Bounds(*(float(v) for v in (x.min(), y.min(), z.min(), x.max(), y.max(), z.max())))

    def copy(self) -> PointCloud:
        """A deep copy."""
        return PointCloud({n: v.copy() for n, v in self._data.items()}, self.crs)

    # selection and interop (notebooks) ------------------------------------------------------------------------
    def crop(self, bounds: Bounds | tuple[float, float, float, float]) -> PointCloud:
        """The points inside ``bounds`` (edges included): a :class:`Bounds` in 3D or (minx, miny, maxx, maxy)."""
        x, y = self._data["x"], self._data["y"]
        if len(bounds) == 4:
            minx, miny, maxx, maxy = bounds
            return self[(x >= minx) & (x <= maxx) & (y >= miny) & (y <= maxy)]
        b = Bounds(*bounds)
        z = self._data["z"]
        return self[(x >= b.minx) & (x <= b.maxx) & (y >= b.miny) & (y <= b.maxy) & (z >= b.minz) & (z <= b.maxz)]

    def crop_polygon(self, polygon: shapely.Geometry) -> PointCloud:
        """The points whose (x, y) lie inside a shapely (multi)polygon in the cloud's CRS (the boundary
        excluded)."""
        import shapely

        shapely.prepare(polygon)
        return self[shapely.contains_xy(polygon, self._data["x"], self._data["y"])]

    def to_open3d(self) -> open3d.geometry.PointCloud:
        """An open3d point cloud of the coordinates, with colours in [0, 1] when the cloud has RGB (8-bit values
        stored in 16-bit fields are recognised)."""
        import open3d

        pcd = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(self.xyz))
        if all(self.has(c) for c in ("red", "green", "blue")):
            rgb = np.column_stack([self._data["red"], self._data["green"], self._data["blue"]]).astype("f8")
            pcd.colors = open3d.utility.Vector3dVector(rgb / (255.0 if rgb.max(initial=0) <= 255 else 65535.0))
        return pcd

    @classmethod
    def from_open3d(cls, pcd: open3d.geometry.PointCloud, crs: pyproj.CRS | None = None) -> PointCloud:
        """A cloud from an open3d point cloud (colours become 16-bit red, green, blue)."""
        cloud = cls.from_xyz(np.asarray(pcd.points), crs)
        if pcd.has_colors():
            rgb = np.round(np.clip(np.asarray(pcd.colors), 0.0, 1.0) * 65535.0)
            for i, name in enumerate(("red", "green", "blue")):
                cloud.set(name, rgb[:, i])
        return cloud

    def to_pyvista(self) -> pyvista.PolyData:
        """A pyvista PolyData of the points (float64 coordinates), every other dimension as point data."""
        import pyvista

        poly = pyvista.PolyData(self.xyz)
        for name, values in self._data.items():
            if name not in ("x", "y", "z"):
                poly.point_data[name] = values
        return poly

    def to_pandas(self) -> pandas.DataFrame:
        """A pandas DataFrame with one column per dimension (needs the ``pandas`` extra)."""
        from cim.extras import require

        pandas = require("pandas", "pandas", "PointCloud.to_pandas")
        return pandas.DataFrame({n: v.copy() for n, v in self._data.items()})

    @classmethod
    def from_pandas(cls, frame: pandas.DataFrame, crs: pyproj.CRS | None = None) -> PointCloud:
        """A cloud from a DataFrame with columns x, y, z and any numeric others."""
        return cls({str(n): frame[n].to_numpy() for n in frame.columns}, crs)


def _coerce(name: str, values: np.ndarray | float | int | bool, n: int) -> np.ndarray:
    dtype = STANDARD_DTYPES.get(name)
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.full(n, array, dtype=dtype or array.dtype)
    elif dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"dimension {name!r} has shape {array.shape}, expected ({n},)")
    return array
