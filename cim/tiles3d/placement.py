"""Placement of local content on the globe: a local east-north-up frame tied to ECEF (EPSG:4978).

Content (points, meshes) is stored in a local ENU frame whose origin is a point of the job area; the 3D Tiles root
transform maps that frame to ECEF. Coordinates go source CRS -> EPSG:4979 (through the job's full compound CRS and
the shipped geoid grids, via :func:`cim.crs.to_geographic3d`, which refuses ballpark vertical transformations) ->
EPSG:4978 -> local ENU.

For many points :meth:`LocalFrame.to_local` uses an exact decomposition instead of one PROJ call per point: for a
projected CRS with a geoid-based vertical CRS, ``local(x, y, H) = A(x, y) + H * B(x, y)`` (ellipsoidal height is
``H + N(lat, lon)`` and ECEF is linear in ellipsoidal height along the ellipsoid normal). Over a processing tile
``A`` and ``B`` are smooth (earth curvature, projection scale, geoid undulation), so they are fitted by a cubic and
an affine polynomial to exact PROJ results on a control grid; every call checks the fit against exact results at
a sample of the points (the extremes included) and falls back to exact transforms when the check exceeds
``tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyproj

from cim import crs as cimcrs
from cim.errors import CrsError

#: Largest interpolation error accepted by the fast path of :meth:`LocalFrame.to_local` (metres).
DEFAULT_TOLERANCE = 2e-4
#: Control points per axis of the fast path's polynomial fit, and points per evaluation chunk (small enough that
#: the (3 x 13) x (13 x chunk) product stays in cache and below OpenBLAS's threading threshold: threaded BLAS in
#: every Dask worker thread oversubscribes the cores).
_GRID_NODES = 9
_CHUNK = 4096
_MIN_POINTS_FOR_GRID = 20_000
_CHECK_POINTS = 256


def geodetic_to_ecef(lon: np.ndarray, lat: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(n,3) ECEF coordinates (EPSG:4978) of WGS84 longitude/latitude (degrees) and ellipsoidal height."""
    return np.column_stack(cimcrs.geographic_to_ecef(np.asarray(lon, float), np.asarray(lat, float),
                                                     np.asarray(h, float)))


def ecef_to_geodetic(xyz: np.ndarray) -> np.ndarray:
    """(n,3) longitude, latitude (degrees), ellipsoidal height of ECEF points."""
    xyz = np.atleast_2d(np.asarray(xyz, float))
    return np.column_stack(cimcrs.ecef_to_geographic(xyz[:, 0], xyz[:, 1], xyz[:, 2]))


@dataclass
class LocalFrame:
    """A local east-north-up frame at ``origin`` (source CRS coordinates) and its tie to ECEF."""

    crs: pyproj.CRS
    origin: tuple[float, float, float]
    origin_geodetic: tuple[float, float, float]
    ecef_from_local: np.ndarray
    tolerance: float = DEFAULT_TOLERANCE
    allow_ballpark: bool = False
    #: Metres per source height unit. PROJ takes the heights of a 2D projected CRS as metres; LAS heights are in
    #: the horizontal unit (US/international feet for many US datasets), so they are converted first.
    z_scale: float = 1.0

    @classmethod
    def from_crs(
        cls,
        crs: pyproj.CRS | str,
        origin_xyz: tuple[float, float, float] | np.ndarray,
        *,
        allow_ballpark: bool = False,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> "LocalFrame":
        """Frame at ``origin_xyz`` (in ``crs``); raises :class:`CrsError` when the CRS cannot be placed exactly."""
        if crs is None:
            raise CrsError("3D Tiles placement needs a CRS; give one (for example --crs EPSG:25832+7837)")
        crs = cimcrs.resolve(crs)
        to_4979 = cimcrs.to_geographic3d(crs, allow_ballpark=allow_ballpark)
        z_scale = 1.0
        if crs.is_projected and not crs.is_compound and len(crs.axis_info) == 2:
            z_scale = cimcrs.linear_unit_factor(crs)
        ox, oy, oz = (float(v) for v in np.asarray(origin_xyz, float).reshape(3))
        lon, lat, h = to_4979.transform(ox, oy, oz * z_scale)
        if not np.all(np.isfinite([lon, lat, h])):
            raise CrsError(f"origin {ox, oy, oz} cannot be transformed from {crs.name} to EPSG:4979")
        ecef_from_local = np.asarray(cimcrs.ecef_from_enu(lon, lat, h), float)
        return cls(crs, (ox, oy, oz), (float(lon), float(lat), float(h)), ecef_from_local, tolerance, allow_ballpark,
                   z_scale)

    @property
    def _to_4979(self) -> pyproj.Transformer:
        """The transformer to EPSG:4979, this thread's own (a frame is shared by the tile steps of the threads
        scheduler; PROJ's transformers are not, see :func:`cim.crs.to_geographic3d`)."""
        return cimcrs.to_geographic3d(self.crs, allow_ballpark=self.allow_ballpark)

    # -- exact transforms -------------------------------------------------------------------------------------
    @property
    def local_from_ecef(self) -> np.ndarray:
        """Inverse of :attr:`ecef_from_local` (rigid, so computed exactly)."""
        r = self.ecef_from_local[:3, :3]
        t = self.ecef_from_local[:3, 3]
        m = np.eye(4)
        m[:3, :3] = r.T
        m[:3, 3] = -r.T @ t
        return m

    def _ecef_to_local(self, ecef: np.ndarray) -> np.ndarray:
        r = self.ecef_from_local[:3, :3]
        t = self.ecef_from_local[:3, 3]
        return (ecef - t) @ r

    def to_local_exact(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(n,3) local ENU coordinates with one PROJ transformation per point."""
        lon, lat, h = cimcrs.transform_points(self._to_4979, x, y, np.asarray(z, float) * self.z_scale)
        lon, lat, h = (np.atleast_1d(np.asarray(a, float)) for a in (lon, lat, h))
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat)) and np.all(np.isfinite(h))):
            raise CrsError(f"some points cannot be transformed from {self.crs.name} to EPSG:4979 (outside the CRS "
                           "area or the geoid grid)")
        return self._ecef_to_local(geodetic_to_ecef(lon, lat, h))

    def from_local(self, local: np.ndarray) -> np.ndarray:
        """(n,3) source-CRS coordinates of local ENU points (the exact inverse path through ECEF and EPSG:4979)."""
        local = np.atleast_2d(np.asarray(local, float))
        ecef = local @ self.ecef_from_local[:3, :3].T + self.ecef_from_local[:3, 3]
        llh = ecef_to_geodetic(ecef)
        x, y, z = cimcrs.transform_points(self._to_4979, llh[:, 0], llh[:, 1], llh[:, 2], direction="INVERSE")
        return np.column_stack([x, y, np.asarray(z) / self.z_scale])

    # -- fast path --------------------------------------------------------------------------------------------
    def to_local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(n,3) local ENU coordinates of source-CRS points (float64).

        Large inputs use the control-grid decomposition (see the module docstring), verified against exact
        transforms at a sample of the points; errors above :attr:`tolerance` fall back to the exact path.
        """
        x = np.atleast_1d(np.asarray(x, float))
        y = np.atleast_1d(np.asarray(y, float))
        z = np.atleast_1d(np.asarray(z, float))
        if len(x) < _MIN_POINTS_FOR_GRID:
            return self.to_local_exact(x, y, z)
        out = self._to_local_grid(x, y, z)
        step = max(1, len(x) // _CHECK_POINTS)
        idx = np.r_[np.arange(0, len(x), step), np.argmin(x), np.argmax(x), np.argmin(y), np.argmax(y),
                    np.argmin(z), np.argmax(z)]
        exact = self.to_local_exact(x[idx], y[idx], z[idx])
        if np.max(np.abs(exact - out[idx])) > self.tolerance:
            return self.to_local_exact(x, y, z)
        return out

    def _to_local_grid(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``A(x, y) + z * B(x, y)`` with A a cubic and B an affine polynomial fitted to exact control points."""
        x0, x1, y0, y1 = x.min(), x.max(), y.min(), y.max()
        xc, yc = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        half = max(x1 - x0, y1 - y0, 1.0) / 2.0
        g = np.linspace(-1.0, 1.0, _GRID_NODES)
        gu, gv = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
        gx, gy = xc + gu * half, yc + gv * half
        h0 = np.zeros_like(gx)
        a = self.to_local_exact(gx, gy, h0)
        b = (self.to_local_exact(gx, gy, h0 + 100.0) - a) / 100.0
        ca = np.linalg.lstsq(_cubic_terms(gu, gv), a, rcond=None)[0]
        cb = np.linalg.lstsq(np.column_stack([np.ones_like(gu), gu, gv]), b, rcond=None)[0]
        coef_t = np.ascontiguousarray(np.vstack([ca, cb]).T)  # (3, 13): output axis x term
        out = np.empty((3, len(x)))
        terms = np.empty((13, min(_CHUNK, len(x))))
        for start in range(0, len(x), _CHUNK):
            stop = min(start + _CHUNK, len(x))
            t = terms[:, : stop - start]
            np.subtract(x[start:stop], xc, out=t[1])
            t[1] /= half
            np.subtract(y[start:stop], yc, out=t[2])
            t[2] /= half
            _fill_terms(t, z[start:stop])
            np.matmul(coef_t, t, out=out[:, start:stop])
        return out.T  # (n,3) with contiguous columns


def _fill_terms(t: np.ndarray, z: np.ndarray) -> None:
    """Rows 0 and 3-12 of the (13, m) term matrix from u = ``t[1]``, v = ``t[2]``: cubic in (u, v), affine z."""
    u, v = t[1], t[2]
    t[0] = 1.0
    np.multiply(u, u, out=t[3])
    np.multiply(u, v, out=t[4])
    np.multiply(v, v, out=t[5])
    np.multiply(t[3], u, out=t[6])
    np.multiply(t[3], v, out=t[7])
    np.multiply(u, t[5], out=t[8])
    np.multiply(v, t[5], out=t[9])
    t[10] = z
    np.multiply(z, u, out=t[11])
    np.multiply(z, v, out=t[12])


def _cubic_terms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(m, 10) cubic monomials of (u, v), in the order of the term matrix's rows 0-9."""
    t = np.empty((13, len(u)))
    t[1], t[2] = u, v
    _fill_terms(t, np.zeros(len(u)))
    return t[:10].T
