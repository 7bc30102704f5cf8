"""CityGML 2.0 writer in the AdV LoD2 profile, streamed: one building in memory at a time.

Per building: ``gml:id`` (the footprint's id, made a valid NCName; then the id itself in ``gml:name``), cim's
attributes (quality figures, status, heights) as ``gen:`` generic attributes, ``bldg:function`` when the footprint
has one, ``bldg:roofType`` (AdV code), ``bldg:measuredHeight`` (highest minus lowest point of the best model,
``urn:adv:uom:m``), LoD1.2 as ``bldg:lod1Solid`` (inline polygons), LoD2.2 as ``bldg:lod2Solid`` whose members
reference (``xlink:href``) the polygons of the ``bldg:boundedBy`` Roof/Wall/GroundSurface ``lod2MultiSurface``s
(roof slope and azimuth as generic attributes there), a footprint-only building as ``bldg:lod0FootPrint``.
Coordinates are rounded to ``decimals`` (1 mm by default) in the job CRS; the srsName follows
:func:`cim.citygml.adv.srs_name`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from lxml import etree

from cim.buildings.model import BuildingModel
from cim.citygml.adv import CITYGML_NS, GML, UOM_M, XLINK, XSI, function_code, gml_id, srs_name
from cim.cityjson import BuildingGeometry
from cim.fileutil import atomic_write

_NS = CITYGML_NS["2.0"]
NSMAP = {"core": _NS["core"], "bldg": _NS["bldg"], "gen": _NS["gen"], "gml": GML, "xlink": XLINK, "xsi": XSI}
SCHEMA_LOCATION = " ".join([
    _NS["bldg"], "http://schemas.opengis.net/citygml/building/2.0/building.xsd",
    _NS["gen"], "http://schemas.opengis.net/citygml/generics/2.0/generics.xsd",
])
#: Semantic surface types that become ``bldg:boundedBy`` surfaces.
BOUNDARY_TYPES = ("RoofSurface", "WallSurface", "GroundSurface", "ClosureSurface", "OuterCeilingSurface",
                  "OuterFloorSurface")
#: Attributes written as ``bldg:`` elements instead of generic attributes.
_PROFILE_KEYS = ("roof_type", "roof_type_name")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: str) -> str:
    """``text`` without the control characters XML 1.0 cannot hold (footprint attributes may carry them)."""
    return _NOT_XML.sub("", text)


def _q(prefix: str, name: str) -> str:
    return f"{{{NSMAP[prefix]}}}{name}"


def _sub(parent: etree._Element, prefix: str, name: str, text: str | None = None,
         attrib: dict[str, str] | None = None) -> etree._Element:
    el = etree.SubElement(parent, _q(prefix, name), attrib or {})
    if text is not None:
        el.text = text
    return el


def pos_list(ring: np.ndarray, decimals: int) -> str:
    """``gml:posList`` text of a ring (n, 3), closed by repeating its first vertex."""
    closed = np.round(np.vstack([ring, ring[:1]]), decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    return " ".join(map(repr, closed.ravel().tolist()))


def _polygon(parent: etree._Element, ring: np.ndarray, decimals: int, pid: str | None = None) -> None:
    poly = _sub(parent, "gml", "Polygon", attrib={_q("gml", "id"): pid} if pid else None)
    lr = _sub(_sub(poly, "gml", "exterior"), "gml", "LinearRing")
    _sub(lr, "gml", "posList", pos_list(ring, decimals), {"srsDimension": "3"})


def measured_height(geom: BuildingGeometry) -> float:
    """AdV ``measuredHeight``: highest minus lowest point of the model (m)."""
    z = geom.vertices[:, 2]
    return float(z.max() - z.min())


def _generic(parent: etree._Element, key: str, value: Any) -> None:
    """One ``gen:`` attribute (string, int or double by the value's type); None, NaN and containers are skipped."""
    if isinstance(value, bool):
        kind, text = "stringAttribute", "true" if value else "false"
    elif isinstance(value, (int, np.integer)):
        kind, text = "intAttribute", str(int(value))
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return
        kind, text = "doubleAttribute", repr(float(value))
    elif isinstance(value, str):
        kind, text = "stringAttribute", xml_text(value)
    else:
        return
    _sub(_sub(parent, "gen", kind, attrib={"name": xml_text(key)}), "gen", "value", text)


def _solid(parent: etree._Element, prop: str, geom: BuildingGeometry, decimals: int,
           hrefs: Sequence[str | None] | None = None) -> None:
    """``bldg:<prop>`` holding a gml:Solid (or a gml:MultiSurface for a geometry that is not closed): inline
    polygons, or references where ``hrefs`` gives a polygon id."""
    solid = geom.geometry_type == "Solid"
    if not solid:
        prop = prop.replace("Solid", "MultiSurface")
    holder = _sub(parent, "bldg", prop)
    if solid:
        members = _sub(_sub(_sub(holder, "gml", "Solid"), "gml", "exterior"), "gml", "CompositeSurface")
    else:
        members = _sub(holder, "gml", "MultiSurface")
    for k, face in enumerate(geom.faces):
        href = hrefs[k] if hrefs else None
        if href:
            _sub(members, "gml", "surfaceMember", attrib={_q("xlink", "href"): f"#{href}"})
        else:
            _polygon(_sub(members, "gml", "surfaceMember"), face, decimals)


def _boundary_surfaces(parent: etree._Element, gid: str, geom: BuildingGeometry,
                       decimals: int) -> list[str | None]:
    """``bldg:boundedBy`` surfaces (one per semantic face); returns each face's polygon id (None: no semantics)."""
    ids: list[str | None] = []
    extras = geom.surface_attributes or [{}] * len(geom.faces)
    for k, (face, sem, extra) in enumerate(zip(geom.faces, geom.semantics, extras)):
        if sem not in BOUNDARY_TYPES:
            ids.append(None)
            continue
        surface = _sub(_sub(parent, "bldg", "boundedBy"), "bldg", sem, attrib={_q("gml", "id"): f"{gid}_s{k}"})
        for key in sorted(extra):
            _generic(surface, key, extra[key])
        ms = _sub(_sub(surface, "bldg", "lod2MultiSurface"), "gml", "MultiSurface")
        pid = f"{gid}_p{k}"
        _polygon(_sub(ms, "gml", "surfaceMember"), face, decimals, pid)
        ids.append(pid)
    return ids


def building_element(model: BuildingModel, gid: str, *, decimals: int = 3,
                     creation_date: str | None = None) -> etree._Element:
    """The ``core:cityObjectMember`` element of one building."""
    member = etree.Element(_q("core", "cityObjectMember"), nsmap={k: v for k, v in NSMAP.items() if k != "xsi"})
    b = _sub(member, "bldg", "Building", attrib={_q("gml", "id"): gid})
    if gid != model.id:
        _sub(b, "gml", "name", xml_text(model.id))  # the id as the footprints give it
    if creation_date:
        _sub(b, "core", "creationDate", creation_date)
    attrs = model.attributes
    for key in sorted(attrs):
        if key not in _PROFILE_KEYS:
            _generic(b, key, attrs[key])
    function = function_code(attrs)
    if function:
        _sub(b, "bldg", "function", function)
    if attrs.get("roof_type") is not None:
        _sub(b, "bldg", "roofType", str(int(attrs["roof_type"])))
    best = model.lod22 or model.lod12
    if best is not None:
        _sub(b, "bldg", "measuredHeight", repr(round(measured_height(best), decimals)), {"uom": UOM_M})
    if best is None and model.lod0 is not None:
        ms = _sub(_sub(b, "bldg", "lod0FootPrint"), "gml", "MultiSurface")
        for face in model.lod0.faces:
            _polygon(_sub(ms, "gml", "surfaceMember"), face, decimals)
    if model.lod12 is not None:
        _solid(b, "lod1Solid", model.lod12, decimals)
    if model.lod22 is not None:
        bounded = etree.Element("holder")  # boundedBy comes after lod2Solid, but the solid needs its polygon ids
        ids = _boundary_surfaces(bounded, gid, model.lod22, decimals)
        _solid(b, "lod2Solid", model.lod22, decimals, ids)
        b.extend(list(bounded))
    return member


def envelope(models: Iterable[BuildingModel]) -> tuple[np.ndarray, np.ndarray] | None:
    """(lower, upper) corner of all geometries of ``models``; None when there is none."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for m in models:
        for g in (m.lod22, m.lod12, m.lod0):
            if g is not None and g.faces:
                v = g.vertices
                lo, hi = np.minimum(lo, v.min(axis=0)), np.maximum(hi, v.max(axis=0))
    return (lo, hi) if np.isfinite(lo).all() else None


def _envelope_element(bounds: tuple[np.ndarray, np.ndarray], srs: str, decimals: int) -> etree._Element:
    bb = etree.Element(_q("gml", "boundedBy"), nsmap=NSMAP)
    env = _sub(bb, "gml", "Envelope", attrib={"srsName": srs, "srsDimension": "3"})
    for name, corner in zip(("lowerCorner", "upperCorner"), bounds):
        _sub(env, "gml", name, " ".join(map(repr, (np.round(corner, decimals) + 0.0).tolist())))
    return bb


def write_citygml(path: str | Path, models: Iterable[BuildingModel], crs: pyproj.CRS, *,
                  bounds: tuple[np.ndarray, np.ndarray] | None = None, name: str | None = None,
                  creation_date: str | None = None, decimals: int = 3) -> Path:
    """Write ``models`` as one CityGML 2.0 ``core:CityModel`` (AdV LoD2 profile) to ``path``, atomically.

    The file is written incrementally, one building at a time; ``models`` may be a generator when ``bounds``
    (the (lower, upper) corners of the ``gml:boundedBy`` envelope, e.g. from :func:`envelope`) is given,
    otherwise it is read twice. ``creation_date`` (ISO date of the data) stamps every building.
    """
    path = Path(path)
    srs = srs_name(crs)
    if bounds is None:
        models = list(models)
        bounds = envelope(models)
    used: set[str] = set()
    with atomic_write(path) as tmp, etree.xmlfile(str(tmp), encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(_q("core", "CityModel"), {_q("xsi", "schemaLocation"): SCHEMA_LOCATION}, nsmap=NSMAP):
            xf.write("\n")
            if name:
                name_el = etree.Element(_q("gml", "name"), nsmap=NSMAP)
                name_el.text = name
                xf.write(name_el, pretty_print=True)
            if bounds is not None:
                xf.write(_envelope_element(bounds, srs, decimals), pretty_print=True)
            for model in models:
                gid = _unique(gml_id(model.id), used)
                xf.write(building_element(model, gid, decimals=decimals, creation_date=creation_date),
                         pretty_print=True)
    return path


def _unique(gid: str, used: set[str]) -> str:
    """``gid``, or ``gid_<n>`` when an earlier building already took it."""
    out, n = gid, 1
    while out in used:
        n += 1
        out = f"{gid}_{n}"
    used.add(out)
    return out
