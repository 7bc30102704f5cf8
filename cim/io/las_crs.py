"""The CRS of a LAS/LAZ/COPC file, from its WKT or GeoTIFF-key VLRs (compound CRS understood)."""

from __future__ import annotations

import laspy
import pyproj

_PROJECTED_KEY, _GEOGRAPHIC_KEY, _VERTICAL_KEY = 3072, 2048, 4096
_USER_DEFINED = 32767


def _wkt_crs(header: laspy.LasHeader) -> pyproj.CRS | None:
    for vlr in header.vlrs:
        if isinstance(vlr, laspy.vlrs.known.WktCoordinateSystemVlr) and vlr.string.strip("\x00 "):
            return pyproj.CRS.from_wkt(vlr.string.strip("\x00 "))
    return None


def _geokey_crs(header: laspy.LasHeader) -> pyproj.CRS | None:
    directory = next((v for v in header.vlrs if isinstance(v, laspy.vlrs.known.GeoKeyDirectoryVlr)), None)
    if directory is None:
        return None
    keys = {k.id: k.value_offset for k in directory.geo_keys if k.tiff_tag_location == 0}
    horizontal = keys.get(_PROJECTED_KEY) or keys.get(_GEOGRAPHIC_KEY)
    if not horizontal or horizontal == _USER_DEFINED:
        return None
    vertical = keys.get(_VERTICAL_KEY)
    if vertical and vertical != _USER_DEFINED:
        try:
            return pyproj.CRS.from_user_input(f"EPSG:{horizontal}+{vertical}")
        except pyproj.exceptions.CRSError:
            pass
    return pyproj.CRS.from_epsg(horizontal)


def header_crs(header: laspy.LasHeader) -> tuple[pyproj.CRS | None, str]:
    """The file's CRS and where it came from ('wkt', 'geotiff', 'none').

    The WKT VLR is authoritative when the header's WKT bit is set or the point format is 6–10 (LAS 1.4 rule).
    Otherwise EPSG-coded GeoTIFF keys win (they keep a vertical CRS that laspy's own parser drops); a
    user-defined (32767) GeoTIFF CRS falls back to the WKT VLR.
    """
    wkt = _wkt_crs(header)
    keys = _geokey_crs(header)
    wkt_first = header.global_encoding.wkt or header.point_format.id >= 6
    ordered = [(wkt, "wkt"), (keys, "geotiff")] if wkt_first else [(keys, "geotiff"), (wkt, "wkt")]
    for crs, source in ordered:
        if crs is not None:
            return crs, source
    if any(isinstance(v, laspy.vlrs.known.GeoKeyDirectoryVlr) for v in header.vlrs):
        try:
            crs = header.parse_crs()
        except Exception:  # noqa: BLE001 - laspy raises several kinds for unparsable keys
            crs = None
        if crs is not None:
            return crs, "geotiff"
    return None, "none"
