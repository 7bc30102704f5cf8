"""Building footprints: read (GeoPackage / GeoJSON / Shapefile / SpatiaLite), repair, reproject, or derive from points.

Reading is forgiving where users' files are sloppy and loud about what it changed: 3D coordinates are flattened,
repeated (incl. duplicate closing) vertices removed, invalid polygons repaired with ``make_valid`` (warning), multi
polygons split into one footprint per part (ids ``<id>-<k>``, warning), duplicate ids made unique (warning).
Footprints are reprojected to the job CRS (its horizontal part).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from cim.errors import CimWarning, InputError

log = logging.getLogger("cim.buildings.footprints")

ID_FIELDS = ("identificatie", "identificatiebagpnd", "gml_id", "building_id", "id", "gmlid", "uuid", "fid")


@dataclass
class Footprint:
    """One building footprint in the job CRS: a hole-aware Polygon (CCW exterior) plus its source attributes."""

    id: str
    polygon: Polygon
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def representative_point(self) -> tuple[float, float]:
        """A point surely inside the footprint; decides which tile owns the building."""
        p = self.polygon.representative_point()
        return float(p.x), float(p.y)


def owner_tile(fp: Footprint, size: float) -> tuple[int, int]:
    """Column and row of the tile (edge ``size``) holding the footprint's representative point: its building's
    tile."""
    x, y = fp.representative_point
    return math.floor(x / size), math.floor(y / size)


def tile_reach(fp: Footprint, size: float) -> float:
    """How far ``fp`` reaches beyond the core square of its :func:`owner_tile`: the tile buffer that tile needs to
    see all of its points (0 when it stays inside the square)."""
    ix, iy = owner_tile(fp, size)
    x0, y0, x1, y1 = fp.polygon.bounds
    return max(ix * size - x0, iy * size - y0, x1 - (ix + 1) * size, y1 - (iy + 1) * size, 0.0)


def _horizontal(crs: pyproj.CRS) -> pyproj.CRS:
    return crs.sub_crs_list[0] if crs.is_compound else crs


def clean_polygon(geom: Any, min_area: float = 0.01) -> list[Polygon]:
    """Valid, 2D, CCW polygons from any (possibly invalid, 3D, multi) areal geometry; empty list when none."""
    if geom is None or geom.is_empty:
        return []
    geom = shapely.force_2d(geom)
    try:
        geom = shapely.remove_repeated_points(geom, 1e-6)
    except shapely.errors.GEOSException:  # a ring collapsed to fewer than 3 distinct points: nothing areal
        return []
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon)]
    if isinstance(geom, shapely.GeometryCollection) and not parts:
        parts = [g for sub in geom.geoms for g in shapely.get_parts(sub) if isinstance(g, Polygon)]
    out = []
    for p in parts:
        p = orient(shapely.remove_repeated_points(p, 1e-6), 1.0)
        if p.area >= min_area:
            out.append(p)
    return out


def read_footprints(
    path: str | Path,
    crs: pyproj.CRS | str | None = None,
    *,
    layer: str | int | None = None,
    id_field: str | None = None,
    source_crs: pyproj.CRS | str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
) -> list[Footprint]:
    """Footprints of a vector file, reprojected to ``crs`` (when given).

    ``source_crs`` overrides (or supplies) the file's CRS. ``bbox`` (in ``crs``) keeps only footprints whose
    representative point lies in [minx, maxx) x [miny, maxy). The id comes from ``id_field`` or the first of
    :data:`ID_FIELDS` present, else the feature's position.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    declared, names, shapes, rows = (_read_citygml(path) if is_citygml(path) else _read_vector(path, layer))
    file_crs = source_crs or declared
    if file_crs is None and crs is not None:
        raise InputError(path, "the footprint file declares no CRS; pass its CRS (source_crs / --footprints-crs)")
    if id_field is not None and id_field not in names:
        raise InputError(path, f"no field {id_field!r} (fields: {', '.join(names)})")
    idf = id_field or next((f for f in ID_FIELDS if f in names), None)
    if not len(shapes):
        raise InputError(path, f"the layer {'' if layer is None else repr(layer) + ' '}has no footprints")
    if crs is not None and file_crs is not None:
        src, dst = _horizontal(pyproj.CRS.from_user_input(file_crs)), _horizontal(pyproj.CRS.from_user_input(crs))
        if not src.equals(dst):
            tr = pyproj.Transformer.from_crs(src, dst, always_xy=True)
            shapes = shapely.transform(shapes, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    out: list[Footprint] = []
    seen: dict[str, int] = {}
    repaired, split, dropped = [], [], []
    for i, geom in enumerate(shapes):
        attrs = rows[i]
        fid = str(attrs[idf]) if idf and attrs.get(idf) not in (None, "") else f"b{i}"
        if fid in seen:
            seen[fid] += 1
            fid = f"{fid}~{seen[fid]}"
        else:
            seen[fid] = 0
        if geom is not None and not geom.is_empty and not shapely.force_2d(geom).is_valid:
            repaired.append(fid)
        parts = clean_polygon(geom)
        if not parts:
            dropped.append(fid)
            continue
        if len(parts) > 1:
            split.append(fid)
        for k, poly in enumerate(sorted(parts, key=lambda p: -p.area)):
            out.append(Footprint(fid if len(parts) == 1 else f"{fid}-{k + 1}", poly, attrs))
    for what, ids in (("repaired invalid", repaired), ("split multi-part", split),
                      ("skipped empty / degenerate (collapsed to a point or line)", dropped)):
        if ids:
            warnings.warn(f"{path}: {what} footprints: {', '.join(ids[:10])}{' …' if len(ids) > 10 else ''}",
                          CimWarning, stacklevel=2)
    dup = [k for k, v in seen.items() if v]
    if dup:
        warnings.warn(f"{path}: duplicate footprint ids made unique: {', '.join(dup[:10])}", CimWarning,
                      stacklevel=2)
    if bbox is not None:
        out = [f for f in out if _in_box(f.representative_point, bbox)]
    return out


def is_citygml(path: str | Path) -> bool:
    """Whether ``path`` is a CityGML file (``.gml`` / ``.xml`` whose start names a ``CityModel``)."""
    path = Path(path)
    if path.suffix.lower() not in (".gml", ".xml") or not path.is_file():
        return False
    with open(path, "rb") as f:
        return b"CityModel" in f.read(8192)


def _read_vector(path: Path, layer: str | int | None) -> tuple[Any, list[str], np.ndarray, list[dict[str, Any]]]:
    """(declared CRS, field names, geometries, attributes per feature) of an OGR vector file."""
    import pyogrio

    try:
        info = pyogrio.read_info(path, layer=layer)
        meta, _, geoms, fields = pyogrio.raw.read(path, layer=layer, return_fids=False)
    except Exception as exc:  # pyogrio raises its own DataSourceError / DataLayerError hierarchy
        raise InputError(path, f"cannot read footprints: {exc}") from exc
    names = [str(n) for n in (meta.get("fields") if meta.get("fields") is not None else [])]
    shapes = shapely.from_wkb(geoms)
    rows = [{n: _plain(fields[k][i]) for k, n in enumerate(names)} for i in range(len(shapes))]
    return meta.get("crs") or info.get("crs"), names, shapes, rows


def _read_citygml(path: Path) -> tuple[Any, list[str], np.ndarray, list[dict[str, Any]]]:
    """(declared CRS, field names, outlines, attributes) of the buildings of a CityGML (LoD1/LoD2) file: each
    building's outline is the union of its ground surfaces (parts included; else the plan projection of its
    surfaces or solid); its ``gml_id``, ``name``, ``roofType``, ``measuredHeight``, ``function`` and generic
    attributes are its fields. Coordinates are taken as written (easting first, as the AdV writes them)."""
    from cim.buildings.evaluate import footprint_of
    from cim.citygml.reader import read_citygml
    from cim.cityjson import BuildingGeometry

    model = read_citygml(path)
    shapes, rows = [], []
    for b in model.buildings:
        geom = b.geometry()
        if not geom.faces:
            polys = b.solids.get("lod2") or b.solids.get("lod1") or []
            geom = BuildingGeometry(b.id, polys, [None] * len(polys), geometry_type="MultiSurface")
        shapes.append(footprint_of(geom) if geom.faces else None)
        rows.append({"gml_id": b.id, "name": b.name, "roofType": b.roof_type, "measuredHeight": b.measured_height,
                     "function": b.function, **b.attributes})
    names = list(dict.fromkeys(k for r in rows for k in r))
    return model.crs, names, np.asarray(shapes, dtype=object), [{n: r.get(n) for n in names} for r in rows]


def check_footprint_file(path: str | Path, crs: pyproj.CRS, points: tuple[float, float, float, float], *,
                         layer: str | int | None = None, source_crs: pyproj.CRS | str | None = None) -> None:
    """Before any work: the file opens, the layer exists and has features, and its extent meets the points'
    ``(minx, miny, maxx, maxy)`` in ``crs`` (else an :class:`InputError` naming the likely CRS mix-up)."""
    import pyogrio

    path = Path(path)
    if is_citygml(path):
        declared, _, shapes, _ = _read_citygml(path)
        if not len(shapes):
            raise InputError(path, "the CityGML file holds no buildings")
        _check_extent(path, shapely.total_bounds(shapes), source_crs or declared, crs, points)
        return
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio's DataSourceError and friends
        raise InputError(path, f"not a readable vector file ({exc})") from None
    if isinstance(layer, str) and layer not in layers:
        raise InputError(path, f"no layer {layer!r} (layers: {', '.join(layers) or 'none'})")
    try:
        info = pyogrio.read_info(path, layer=layer, force_feature_count=True, force_total_bounds=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"cannot read footprints: {exc}") from None
    name = info.get("layer_name") or layer or layers[0]
    if not info.get("features"):
        raise InputError(path, f"layer {name!r} has no footprints")
    _check_extent(path, info.get("total_bounds") or (), source_crs or info.get("crs"), crs, points)


def _check_extent(path: Path, bounds: Sequence[float], declared: Any, crs: pyproj.CRS,
                  points: tuple[float, float, float, float]) -> None:
    """The footprints' ``bounds`` (in ``declared``) meet the points' (in ``crs``), else an :class:`InputError`."""
    if declared is None:
        raise InputError(path, "the footprint file declares no CRS; give it with footprints_crs (--footprints-crs)")
    extent = tuple(float(v) for v in bounds)
    if len(extent) != 4 or not all(math.isfinite(v) for v in extent):
        return
    src, dst = _horizontal(pyproj.CRS.from_user_input(declared)), _horizontal(crs)
    box = extent if src.equals(dst) else pyproj.Transformer.from_crs(src, dst, always_xy=True).transform_bounds(*extent)
    if box[0] <= points[2] and points[0] <= box[2] and box[1] <= points[3] and points[1] <= box[3]:
        return
    raise InputError(path, f"the footprints ({_box(extent)} in {src.name}) do not meet the points "
                           f"({_box(points)} in {dst.name}): {_crs_hint(extent, src)}")


def _box(b: Sequence[float]) -> str:
    return f"{b[0]:.6g} {b[1]:.6g} - {b[2]:.6g} {b[3]:.6g}"


def _crs_hint(extent: Sequence[float], declared: pyproj.CRS) -> str:
    """The likely CRS mix-up behind footprints that miss the points."""
    degrees = -180 <= extent[0] <= extent[2] <= 180 and -90 <= extent[1] <= extent[3] <= 90
    if degrees and not declared.is_geographic:
        return (f"the coordinates look like EPSG:4326 degrees although the file declares {declared.name}; "
                "set footprints_crs = \"EPSG:4326\" or fix the file")
    if declared.is_geographic and not degrees:
        return (f"the coordinates look like projected metres although the file declares {declared.name}; "
                "set footprints_crs to their CRS")
    return f"is the file's CRS ({declared.name}) right, and does it cover the same area as the points?"


def _in_box(p: tuple[float, float], bbox: Sequence[float]) -> bool:
    return bbox[0] <= p[0] < bbox[2] and bbox[1] <= p[1] < bbox[3]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return v.hex()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


# ------------------------------------------------------------------------------------------- derived from points


def derive_footprints(x: np.ndarray, y: np.ndarray, *, cell: float = 0.5, min_area: float = 10.0, min_points: int = 20,
                      regularise_tol: float = 0.6, angle_tol_deg: float = 20.0, id_prefix: str = "d"
                      ) -> list[Footprint]:
    """Footprints from building points: 2D occupancy raster, connected components, outline, regularised.

    The outline follows the centre line between occupied and empty cells, so it sits half a cell outside the
    outermost points; with ``cell`` ≈ point spacing it is unbiased. Regularisation: Douglas-Peucker with
    ``regularise_tol``, then every edge within ``angle_tol_deg`` of the building's dominant direction (or its
    perpendicular) is snapped to it and consecutive lines are intersected again. Ids are ``<prefix><x>_<y>``
    of the representative point (stable whatever the tile cut).
    """
    from rasterio import features
    from rasterio.transform import Affine
    from scipy import ndimage

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < min_points:
        return []
    x0, y1 = math.floor(x.min() / cell) * cell - 2 * cell, math.ceil(y.max() / cell) * cell + 2 * cell
    cols = np.floor((x - x0) / cell).astype(np.int64)
    rows = np.floor((y1 - y) / cell).astype(np.int64)
    shape = (int(rows.max()) + 3, int(cols.max()) + 3)
    count = np.zeros(shape, np.int32)
    np.add.at(count, (rows, cols), 1)
    occ = count > 0
    occ = ndimage.binary_closing(occ, structure=np.ones((3, 3)), iterations=1)
    labels, n = ndimage.label(occ, structure=np.ones((3, 3)))
    transform = Affine(cell, 0, x0, 0, -cell, y1)
    pts_per_label = np.bincount(labels[rows, cols], minlength=n + 1)
    out = []
    for geom, value in features.shapes(labels.astype(np.int32), mask=labels > 0, transform=transform,
                                       connectivity=4):
        lab = int(value)
        if pts_per_label[lab] < min_points:
            continue
        poly = shapely.geometry.shape(geom)
        if poly.area < min_area:
            continue
        reg = regularise(poly, tol=regularise_tol, angle_tol_deg=angle_tol_deg)
        mine = labels[rows, cols] == lab
        reg = fit_edges(reg, np.column_stack([x[mine], y[mine]]), reach=2 * cell)
        reg = regularise(reg, tol=min(regularise_tol, 0.3), angle_tol_deg=angle_tol_deg)  # tidy fitted corners
        for p in clean_polygon(reg):
            if p.area < min_area:
                continue
            rp = p.representative_point()
            out.append(Footprint(f"{id_prefix}{rp.x:.1f}_{rp.y:.1f}", p, {"source": "derived"}))
    out.sort(key=lambda f: f.id)
    return out


def _intersect_lines(lines: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Vertices of consecutive lines (point, unit direction); parallel neighbours get a perpendicular step."""
    pts = []
    for i in range(len(lines)):
        (m1, u1), (m2, u2) = lines[i - 1], lines[i]
        den = u1[0] * u2[1] - u1[1] * u2[0]
        if abs(den) < 1e-6:
            mid = (m1 + m2) / 2
            pts.append(m1 + ((mid - m1) @ u1) * u1)
            pts.append(m2 + ((mid - m2) @ u2) * u2)
            continue
        t = ((m2[0] - m1[0]) * u2[1] - (m2[1] - m1[1]) * u2[0]) / den
        pts.append(m1 + t * u1)
    return pts


def _merge_parallel(lines: list[tuple[np.ndarray, np.ndarray]], tol: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Merge neighbouring lines (also last/first) that are parallel and less than ``tol`` apart."""
    def same(l1, l2) -> bool:
        (m1, u1), (m2, u2) = l1, l2
        cross = u1[0] * u2[1] - u1[1] * u2[0]
        d = m2 - m1
        return abs(cross) < 1e-6 and float(u1 @ u2) > 0 and abs(u1[0] * d[1] - u1[1] * d[0]) < tol

    out = list(lines)
    changed = True
    while changed and len(out) > 3:
        changed = False
        for i in range(len(out)):
            j = (i + 1) % len(out)
            if same(out[i], out[j]):
                (m1, u1), (m2, _) = out[i], out[j]
                out[i] = ((m1 + m2) / 2, u1)
                del out[j]
                changed = True
                break
    return out


def fit_edges(poly: Polygon, xy: np.ndarray, reach: float = 1.0, quantile: float = 99.5,
              merge_tol: float = 0.3) -> Polygon:
    """Move every edge of a regularised outline onto the outermost building points near it.

    An occupancy-raster outline sits up to a cell outside the points; the outermost points of a dense roof lie
    within a fraction of the point spacing of the true wall, so each edge line is shifted (parallel) to the
    ``quantile`` of the signed distances of the points within ``reach`` of it. Falls back to ``poly`` when the
    result is not a valid polygon of similar area.
    """
    ring = np.asarray(orient(poly, 1.0).exterior.coords)[:-1]
    n = len(ring)
    if n < 3 or len(xy) < 3:
        return poly
    lines = []
    for i in range(n):
        a, b = ring[i], ring[(i + 1) % n]
        L = float(np.hypot(*(b - a)))
        if L == 0:
            continue
        u = (b - a) / L
        out_n = np.array([u[1], -u[0]])  # CCW ring: outside is on the right
        rel = xy - a
        t = rel @ u
        s = rel @ out_n
        near = (t > 0.1 * L) & (t < 0.9 * L) & (np.abs(s) < reach)
        shift = float(np.percentile(s[near], quantile)) if near.sum() >= 5 else 0.0
        lines.append((a + shift * out_n, u))
    lines = _merge_parallel(lines, merge_tol)
    pts = _intersect_lines(lines)
    if len(pts) < 3:
        return poly
    cand = Polygon(pts)
    if not cand.is_valid or abs(cand.area - poly.area) > 0.3 * poly.area:
        return poly
    return cand


def dominant_direction(poly: Polygon) -> float:
    """Direction (radians, modulo π/2) that most edge length of ``poly`` is parallel or perpendicular to."""
    ring = np.asarray(poly.exterior.coords)
    d = np.diff(ring, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    ang = np.mod(np.arctan2(d[:, 1], d[:, 0]), np.pi / 2)
    # circular mean with period π/2
    s = (length * np.sin(4 * ang)).sum()
    c = (length * np.cos(4 * ang)).sum()
    return float(np.mod(np.arctan2(s, c) / 4, np.pi / 2))


def regularise(poly: Polygon, tol: float = 0.6, angle_tol_deg: float = 20.0) -> Polygon:
    """Simplify an outline and snap its edges to the dominant direction and its perpendicular."""
    simp = poly.simplify(tol, preserve_topology=True)
    if not isinstance(simp, Polygon) or simp.is_empty:
        return poly
    theta = dominant_direction(simp)  # not the raster outline: its staircase edges pull towards the grid axes
    ring = np.asarray(orient(simp, 1.0).exterior.coords)[:-1]
    n = len(ring)
    if n < 3:
        return simp
    lines = []  # (point on line, unit direction)
    for i in range(n):
        a, b = ring[i], ring[(i + 1) % n]
        d = b - a
        L = math.hypot(*d)
        if L == 0:
            continue
        ang = math.atan2(d[1], d[0])
        k = round((ang - theta) / (np.pi / 2))
        target = theta + k * np.pi / 2
        if abs(ang - target) < math.radians(angle_tol_deg):
            ang = target
        elif L < 2.5 * tol:
            continue  # a short oblique edge is a cut corner of the raster outline: let its neighbours meet
        u = np.array([math.cos(ang), math.sin(ang)])
        lines.append(((a + b) / 2, u))
    # merge consecutive parallel lines that are (nearly) the same line
    merged: list[tuple[np.ndarray, np.ndarray]] = []
    for m, u in lines:
        if merged:
            m0, u0 = merged[-1]
            d = m - m0
            if abs(u0[0] * u[1] - u0[1] * u[0]) < 1e-9 and abs(u0[0] * d[1] - u0[1] * d[0]) < tol * 0.5:
                continue
        merged.append((m, u))
    pts = _intersect_lines(merged)
    if len(pts) < 3:
        return simp
    cand = Polygon(pts)
    if not cand.is_valid or cand.area <= 0 or abs(cand.area - poly.area) > 0.25 * poly.area:
        return simp
    return cand
