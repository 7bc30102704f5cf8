"""Compare cim's building models with official ones (AdV LoD2 CityGML): buildings matched by footprint overlap
(IoU), then per matched pair and overall the roof type agreement, the ``measuredHeight`` difference and the roof
surface difference (the two roofs' height fields sampled on a grid inside both footprints: median, RMSE and RMSE
after removing the median, i.e. with a constant vertical offset between the data sets taken out).

Differences are always ours minus official.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely
from shapely.geometry import Polygon

from cim import crs as crs_mod
from cim.buildings.evaluate import footprint_of, roof_height_at
from cim.buildings.mesh import face_plane
from cim.citygml.reader import CityGmlBuilding, read_citygml
from cim.crs_plan import DHHN92, DHHN92_AS_DHHN2016, DHHN2016
from cim.citygml.writer import measured_height
from cim.cityjson import BuildingGeometry
from cim.errors import CrsError, InputError


@dataclass
class Comparable:
    """What the comparison needs of one building, from either format: its faces all typed, roofs facing up."""

    id: str
    footprint: Polygon
    roof_type: int | None
    measured_height: float | None
    geometry: BuildingGeometry


def _with_semantics(geom: BuildingGeometry) -> BuildingGeometry:
    """``geom`` with every face typed (untyped faces by their normal: up roof, down ground, else wall) and roof
    faces turned to face upwards (files differ in ring orientation)."""
    faces, sem = [], []
    for f, s in zip(geom.faces, geom.semantics):
        nz = face_plane(f)[0][2] if len(f) >= 3 else 0.0
        if s is None:
            s = "RoofSurface" if nz > 0.1 else "GroundSurface" if nz < -0.1 else "WallSurface"
        faces.append(f[::-1] if s == "RoofSurface" and nz < 0 else f)
        sem.append(s)
    return BuildingGeometry(geom.id, faces, sem, lod=geom.lod, geometry_type="MultiSurface")


def _comparable(bid: str, geom: BuildingGeometry, roof_type: Any, height: float | None) -> Comparable | None:
    geom = _with_semantics(geom)
    fp = footprint_of(geom) if geom.faces else Polygon()
    if fp.is_empty or fp.area <= 0:
        return None
    return Comparable(bid, fp, _as(int, roof_type), height if height is not None else measured_height(geom), geom)


def _as(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (int roof type codes, float heights); None when absent or not one."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _from_citygml(b: CityGmlBuilding) -> Comparable | None:
    geom = b.geometry()
    if not geom.faces:
        polys = b.solids.get("lod2") or b.solids.get("lod1") or []
        geom = BuildingGeometry(b.id, polys, [None] * len(polys), geometry_type="MultiSurface")
    return _comparable(b.id, geom, b.roof_type, b.measured_height)


def load_buildings(path: str | Path) -> tuple[pyproj.CRS | None, list[Comparable]]:
    """(CRS, buildings) of a CityGML or CityJSON(Seq) file; buildings without geometry are left out."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).lstrip()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    if head.startswith(b"<"):
        data = read_citygml(path)
        found = [_from_citygml(b) for b in data.buildings]
        crs = data.crs
    elif head.startswith(b"{"):
        from cim.buildings.run import models_from_cityjson
        from cim.cityjson import read_reference_system

        crs = read_reference_system(path)
        found = []
        for m in models_from_cityjson(path):
            best = m.lod22 or m.lod12 or m.lod0
            if best is not None:  # cim's attribute names, else CityJSON's (e.g. 3DBAG, cim's synthetic truth)
                a = m.attributes
                found.append(_comparable(m.id, best, a.get("roof_type", a.get("roofType")),
                                         _as(float, a.get("measuredHeight"))))
    else:
        raise InputError(path, "neither CityGML (XML) nor CityJSON")
    return crs, [c for c in found if c is not None]


def check_crs(ours: pyproj.CRS | None, official: pyproj.CRS | None, ours_path: Path, official_path: Path,
              accept_height_system: str | None = None) -> list[str]:
    """Raise :class:`CrsError` when the two CRSs differ; notes for what cannot be checked (missing parts).
    ``accept_height_system`` = "DHHN92-as-DHHN2016" compares DHHN92 heights with DHHN2016 ones as they are (what
    cim's products of DHHN92 points declare, see :func:`cim.crs_plan.working_crs`), with a note."""
    if ours is None or official is None:
        missing = ours_path if ours is None else official_path
        return [f"{missing} declares no CRS: coordinates compared as they are"]
    if not crs_mod.horizontal_part(ours).equals(crs_mod.horizontal_part(official), ignore_axis_order=True):
        raise CrsError(f"CRS mismatch: {ours_path} is in {crs_mod.describe(ours)}, {official_path} in "
                       f"{crs_mod.describe(official)}; reproject one of them first")
    v_ours, v_off = crs_mod.vertical_part(ours), crs_mod.vertical_part(official)
    if v_ours is not None and v_off is not None and not v_ours.equals(v_off):
        dhhn = {v_ours.to_epsg(), v_off.to_epsg()} == {DHHN92, DHHN2016}
        if dhhn and accept_height_system == DHHN92_AS_DHHN2016:
            return ["DHHN92 heights compared with DHHN2016 ones as they are (accept_height_system; a few "
                    "centimetres off)"]
        raise CrsError(f"height system mismatch: {ours_path} has {v_ours.name}, {official_path} has {v_off.name}"
                       + (f" (--accept-height-system {DHHN92_AS_DHHN2016} compares them as they are)" if dhhn
                          else ""))
    if v_ours is None or v_off is None:
        missing = ours_path if v_ours is None else official_path
        return [f"{missing} declares no height system: heights compared as they are"]
    return []


def match(ours: list[Comparable], official: list[Comparable], min_iou: float) -> list[tuple[int, int, float]]:
    """One-to-one (ours index, official index, IoU) pairs, best overlaps first, each at least ``min_iou``."""
    if not ours or not official:
        return []
    a = np.array([c.footprint for c in ours], dtype=object)
    b = np.array([c.footprint for c in official], dtype=object)
    i, j = shapely.STRtree(b).query(a, predicate="intersects")
    inter = shapely.area(shapely.intersection(a[i], b[j]))
    iou = inter / (shapely.area(a[i]) + shapely.area(b[j]) - inter)
    taken_a, taken_b, pairs = set(), set(), []
    for k in np.lexsort((j, i, -iou)):
        if iou[k] >= min_iou and i[k] not in taken_a and j[k] not in taken_b:
            taken_a.add(i[k])
            taken_b.add(j[k])
            pairs.append((int(i[k]), int(j[k]), float(iou[k])))
    return pairs


def roof_differences(ours: Comparable, official: Comparable, spacing: float) -> np.ndarray:
    """Ours minus official roof height on a ``spacing`` grid inside both footprints (where both have a roof)."""
    area = ours.footprint.intersection(official.footprint).buffer(-0.05)
    if area.is_empty:
        return np.zeros(0)
    minx, miny, maxx, maxy = area.bounds
    gx, gy = np.meshgrid(np.arange(minx + spacing / 2, maxx, spacing), np.arange(miny + spacing / 2, maxy, spacing))
    x, y = gx.ravel(), gy.ravel()
    inside = shapely.contains_xy(area, x, y)
    x, y = x[inside], y[inside]
    d = roof_height_at(ours.geometry, x, y) - roof_height_at(official.geometry, x, y)
    return d[np.isfinite(d)]


def _stats(d: np.ndarray) -> dict[str, Any]:
    if len(d) == 0:
        return {"samples": 0}
    med = float(np.median(d))
    return {"samples": int(len(d)), "median": _r(med), "rmse": _r(np.sqrt(np.mean(d ** 2))),
            "rmse_minus_median": _r(np.sqrt(np.mean((d - med) ** 2)))}


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3) + 0.0


def compare(ours_path: str | Path, official_path: str | Path, *, min_iou: float = 0.5,
            spacing: float = 0.5, accept_height_system: str | None = None) -> dict[str, Any]:
    """The comparison report (a JSON-able dict) of OURS (cim's CityJSON or CityGML) with OFFICIAL (CityGML)."""
    ours_path, official_path = Path(ours_path), Path(official_path)
    crs_ours, ours = load_buildings(ours_path)
    crs_off, official = load_buildings(official_path)
    notes = check_crs(crs_ours, crs_off, ours_path, official_path, accept_height_system)
    for path, found in ((ours_path, ours), (official_path, official)):
        if not found:
            raise InputError(path, "holds no building with geometry")
    pairs = match(ours, official, min_iou)
    if not pairs:
        raise InputError(official_path, f"no building overlaps one of {ours_path} with IoU >= {min_iou} "
                                        "(different areas?)")
    rows, diffs, centred, dh = [], [], [], []
    for i, j, iou in sorted(pairs, key=lambda p: official[p[1]].id):
        a, b = ours[i], official[j]
        d = roof_differences(a, b, spacing)
        diffs.append(d)
        if len(d):
            centred.append(d - np.median(d))
        row: dict[str, Any] = {
            "ours": a.id, "official": b.id, "iou": _r(iou),
            "roof_type_ours": a.roof_type, "roof_type_official": b.roof_type,
            "roof_type_agrees": None if a.roof_type is None or b.roof_type is None else a.roof_type == b.roof_type,
            "measured_height_ours": _r(a.measured_height), "measured_height_official": _r(b.measured_height),
            "measured_height_diff": None, "roof": _stats(d),
        }
        if a.measured_height is not None and b.measured_height is not None:
            row["measured_height_diff"] = _r(a.measured_height - b.measured_height)
            dh.append(a.measured_height - b.measured_height)
        rows.append(row)
    judged = [r for r in rows if r["roof_type_agrees"] is not None]
    all_d = np.concatenate(diffs) if diffs else np.zeros(0)
    roof = _stats(all_d)
    if centred:
        roof["rmse_minus_building_median"] = _r(np.sqrt(np.mean(np.concatenate(centred) ** 2)))
    dh_arr = np.asarray(dh)
    overall = {
        "matched": len(pairs),
        "iou_mean": _r(np.mean([p[2] for p in pairs])) if pairs else None,
        "roof_type_compared": len(judged),
        "roof_type_agreement": _r(np.mean([r["roof_type_agrees"] for r in judged])) if judged else None,
        "roof_type_pairs": {f"{k[0]}->{k[1]}": n for k, n in sorted(Counter(
            (r["roof_type_ours"], r["roof_type_official"]) for r in judged).items())},
        "measured_height_diff": {"count": len(dh), "median": _r(np.median(dh_arr)) if dh else None,
                                 "mean": _r(np.mean(dh_arr)) if dh else None,
                                 "rmse": _r(np.sqrt(np.mean(dh_arr ** 2))) if dh else None},
        "roof": roof,
    }
    matched_ours, matched_off = {p[0] for p in pairs}, {p[1] for p in pairs}
    return {
        "ours": {"path": str(ours_path), "crs": crs_mod.describe(crs_ours), "buildings": len(ours)},
        "official": {"path": str(official_path), "crs": crs_mod.describe(crs_off), "buildings": len(official)},
        "parameters": {"min_iou": min_iou, "spacing": spacing},
        "notes": notes,
        "overall": overall,
        "unmatched_ours": sorted(c.id for k, c in enumerate(ours) if k not in matched_ours),
        "unmatched_official": sorted(c.id for k, c in enumerate(official) if k not in matched_off),
        "buildings": rows,
    }
