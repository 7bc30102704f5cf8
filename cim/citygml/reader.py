"""Reader of CityGML building files (CityGML 1.0 and 2.0, as the AdV LoD2 deliveries and cim's writer make them).

Streamed (``lxml.etree.iterparse``, one ``bldg:Building`` in memory at a time). Per building: ``gml:id``,
``gml:name``, roof type code, measured height, function, generic attributes, the polygons of its ``bldg:boundedBy``
surfaces by type (outer rings as (n, 3) arrays in the file's CRS, the closing vertex dropped, holes dropped) and its
LoD1/LoD2 solids with ``xlink:href`` members resolved. ``bldg:BuildingPart``\\ s are read as parts of their building.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from lxml import etree

from cim.citygml.adv import CITYGML_NS, GML, XLINK, crs_from_srs_name
from cim.cityjson import BuildingGeometry
from cim.errors import InputError

_BLDG = {v: ns["bldg"] for v, ns in CITYGML_NS.items()}
_GEN_TYPES = {"stringAttribute": str, "intAttribute": int, "doubleAttribute": float, "measureAttribute": float}
_HREF = f"{{{XLINK}}}href"
_GML_ID = f"{{{GML}}}id"


@dataclass
class CityGmlBuilding:
    """One ``bldg:Building`` (or ``bldg:BuildingPart``). ``surfaces``: boundary surface type -> polygons, this
    building's own and those of its parts; ``solids``: "lod1"/"lod2" -> the polygons of its own solid (or
    multi-surface) with references resolved."""

    id: str
    name: str | None = None
    roof_type: int | None = None
    measured_height: float | None = None
    function: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    surfaces: dict[str, list[np.ndarray]] = field(default_factory=dict)
    solids: dict[str, list[np.ndarray]] = field(default_factory=dict)
    parts: list[CityGmlBuilding] = field(default_factory=list)

    def geometry(self) -> BuildingGeometry:
        """The boundary surfaces (parts included) as one semantic LoD2 multi-surface."""
        faces = [f for polys in self.surfaces.values() for f in polys]
        sem = [s for s, polys in self.surfaces.items() for _ in polys]
        return BuildingGeometry(self.id, faces, sem, dict(self.attributes), lod="2", geometry_type="MultiSurface")


@dataclass
class CityGmlFile:
    """What a CityGML file holds: its version ("1.0"/"2.0"), srsName, CRS and buildings in file order."""

    version: str
    srs_name: str | None
    crs: pyproj.CRS | None
    buildings: list[CityGmlBuilding]


def _ring(ring: etree._Element, path: Path) -> np.ndarray:
    """Vertices (n, 3) of a gml:LinearRing (posList or pos), the closing vertex dropped."""
    pos_list = ring.find(f"{{{GML}}}posList")
    if pos_list is not None:
        dim = int(pos_list.get("srsDimension") or 3)
        text = pos_list.text or ""
    else:
        pos = ring.findall(f"{{{GML}}}pos")
        dim, text = 3, " ".join(p.text or "" for p in pos)
    try:
        xyz = np.array(text.split(), dtype=np.float64).reshape(-1, dim)
    except ValueError as exc:
        raise InputError(path, f"ring {ring.get(_GML_ID) or ''} has malformed coordinates ({exc})") from None
    if dim == 2:
        xyz = np.column_stack([xyz, np.zeros(len(xyz))])
    if len(xyz) > 1 and np.array_equal(xyz[0], xyz[-1]):
        xyz = xyz[:-1]
    return xyz[:, :3]


def _polygons(el: etree._Element, path: Path) -> list[tuple[str | None, np.ndarray]]:
    """(gml:id, outer ring) of every gml:Polygon inside ``el``."""
    out = []
    for poly in el.iter(f"{{{GML}}}Polygon"):
        ring = poly.find(f"{{{GML}}}exterior/{{{GML}}}LinearRing")
        if ring is not None:
            out.append((poly.get(_GML_ID), _ring(ring, path)))
    return out


def _solid(holder: etree._Element, building: etree._Element, by_id: dict[str, np.ndarray],
           path: Path) -> list[np.ndarray]:
    """Polygons of a solid / multi-surface property: inline ones and resolved ``xlink:href`` members (looked up
    in ``by_id``, the building's boundary polygons, else anywhere in the building)."""
    out = [ring for _, ring in _polygons(holder, path)]
    for member in holder.iter(f"{{{GML}}}surfaceMember"):
        href = member.get(_HREF)
        if not href:
            continue
        pid = href.lstrip("#")
        target = by_id.get(pid)
        if target is None:
            found = building.xpath(".//gml:Polygon[@gml:id=$pid]", namespaces={"gml": GML}, pid=pid)
            if not found:
                raise InputError(path, f"surfaceMember references {href}, which the building does not hold")
            target = _polygons(found[0], path)[0][1]
        out.append(target)
    return out


def _number(text: str | None, kind: type) -> Any:
    """``text`` as ``kind`` (a generic attribute's value), the text itself when it is not one."""
    try:
        return kind(text) if kind is not str else (text or "")
    except (TypeError, ValueError):
        return text


def _typed(text: str | None, kind: type) -> Any:
    """``text`` as ``kind``; None when it is not one."""
    try:
        return kind(text)
    except (TypeError, ValueError):
        return None


def _building(el: etree._Element, path: Path, by_id: dict[str, np.ndarray] | None = None) -> CityGmlBuilding:
    """The building (or building part) ``el``; ``by_id`` collects its boundary polygons by gml:id."""
    by_id = {} if by_id is None else by_id
    b = CityGmlBuilding(el.get(_GML_ID) or "")
    ns = etree.QName(el).namespace
    gen = ns.replace("building", "generics")
    for child in el:
        tag = etree.QName(child)
        if tag.namespace == GML and tag.localname == "name" and b.name is None:
            b.name = child.text
        elif tag.namespace == gen and tag.localname in _GEN_TYPES:
            b.attributes[child.get("name")] = _number(child.findtext(f"{{{gen}}}value"), _GEN_TYPES[tag.localname])
        elif tag.namespace != ns:
            continue
        elif tag.localname == "function" and b.function is None:
            b.function = child.text
        elif tag.localname == "roofType":
            b.roof_type = _typed(child.text, int)
        elif tag.localname == "measuredHeight":
            b.measured_height = _typed(child.text, float)
        elif tag.localname == "boundedBy":
            for surface in child:
                polys = _polygons(surface, path)
                b.surfaces.setdefault(etree.QName(surface).localname, []).extend(ring for _, ring in polys)
                by_id.update((pid, ring) for pid, ring in polys if pid)
        elif tag.localname == "consistsOfBuildingPart":
            for part_el in child:
                part = _building(part_el, path, by_id)
                b.parts.append(part)
                for kind, polys in part.surfaces.items():
                    b.surfaces.setdefault(kind, []).extend(polys)
    for lod in ("lod1", "lod2"):
        holder = el.find(f"{{{ns}}}{lod}Solid")
        holder = holder if holder is not None else el.find(f"{{{ns}}}{lod}MultiSurface")
        if holder is not None:
            b.solids[lod] = _solid(holder, el, by_id, path)
    if b.roof_type is None and b.parts:
        b.roof_type = max(b.parts, key=_ground_area).roof_type
    if b.measured_height is None:
        heights = [p.measured_height for p in b.parts if p.measured_height is not None]
        b.measured_height = max(heights) if heights else None
    return b


def _ground_area(b: CityGmlBuilding) -> float:
    """Plan area of a building's ground surfaces (shoelace)."""
    area = 0.0
    for ring in b.surfaces.get("GroundSurface", []):
        x, y = ring[:, 0], ring[:, 1]
        area += abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2
    return area


def iter_citygml(path: str | Path) -> Iterator[tuple[str, str | None, CityGmlBuilding]]:
    """(version, srsName seen so far, building) for each ``bldg:Building`` of the file, in file order."""
    path = Path(path)
    tags = [f"{{{GML}}}Envelope", *(f"{{{ns}}}Building" for ns in _BLDG.values())]
    srs: str | None = None
    try:
        for _, el in etree.iterparse(str(path), events=("end",), tag=tags, huge_tree=True):
            if el.tag == tags[0]:
                srs = srs or el.get("srsName")
                continue
            ns = etree.QName(el).namespace
            version = next(v for v, n in _BLDG.items() if n == ns)
            if srs is None:
                first = next(el.iterfind(".//*[@srsName]"), None)
                srs = first.get("srsName") if first is not None else None
            yield version, srs, _building(el, path)
            member = el.getparent()
            el.clear()
            if member is not None and member.getparent() is not None:
                while member.getprevious() is not None:
                    del member.getparent()[0]
    except (etree.XMLSyntaxError, OSError) as exc:
        raise InputError(path, f"not a readable CityGML file ({exc})") from None


def read_citygml(path: str | Path) -> CityGmlFile:
    """All buildings of a CityGML 1.0 / 2.0 file, with its version and CRS (None when no srsName is given)."""
    path = Path(path)
    version, srs, buildings = None, None, []
    for version, srs, b in iter_citygml(path):
        buildings.append(b)
    if version is None:
        version, srs = _version_and_srs(path)
    crs = crs_from_srs_name(srs) if srs else None
    return CityGmlFile(version, srs, crs, buildings)


def _version_and_srs(path: Path) -> tuple[str, str | None]:
    """CityGML version from the root's namespace and the first srsName, for a file without buildings."""
    version, srs = "", None
    try:
        for _, el in etree.iterparse(str(path), events=("start",)):
            if el.getparent() is None:
                ns = etree.QName(el).namespace
                version = next((v for v, n in CITYGML_NS.items() if n["core"] == ns), None)
                if version is None:
                    raise InputError(path, f"not CityGML: root element {etree.QName(el).localname} in {ns}")
            if el.get("srsName"):
                srs = el.get("srsName")
                break
    except (etree.XMLSyntaxError, OSError) as exc:
        raise InputError(path, f"not a readable CityGML file ({exc})") from None
    return version, srs


def read_crs(path: str | Path) -> pyproj.CRS | None:
    """The CRS of a CityGML file (its first srsName), read without parsing the buildings."""
    srs = _version_and_srs(Path(path))[1]
    return crs_from_srs_name(srs) if srs else None
