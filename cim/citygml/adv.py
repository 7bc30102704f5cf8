"""The AdV CityGML profile as the German Länder deliver LoD2: namespaces, srsName rules, ids, function codes.

srsName: the AdV writes ``urn:adv:crs:<horizontal>*<vertical>[*<geoid>]`` (e.g.
``urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH``); any other CRS is written as an OGC EPSG URN
(``urn:ogc:def:crs:EPSG::7415``, or ``urn:ogc:def:crs,crs:EPSG::25832,crs:EPSG::7837`` for a compound CRS without
a code of its own). Roof types are the AdV ``AX_Dachform`` codes, the codes cim's roof classifier already gives
(:mod:`cim.buildings.rooftype`).
"""

from __future__ import annotations

import re

import pyproj

from cim import crs as crs_mod
from cim.errors import CrsError

GML = "http://www.opengis.net/gml"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
#: CityGML namespaces by version: core, bldg, gen.
CITYGML_NS = {
    "2.0": {"core": "http://www.opengis.net/citygml/2.0", "bldg": "http://www.opengis.net/citygml/building/2.0",
            "gen": "http://www.opengis.net/citygml/generics/2.0"},
    "1.0": {"core": "http://www.opengis.net/citygml/1.0", "bldg": "http://www.opengis.net/citygml/building/1.0",
            "gen": "http://www.opengis.net/citygml/generics/1.0"},
}
UOM_M = "urn:adv:uom:m"
#: AX_Gebaeude.gebaeudefunktion codes are written as ``31001_<code>`` (31001: the ALKIS object type AX_Gebaeude).
FUNCTION_PREFIX = "31001_"

_ADV_HORIZONTAL = {25831: "ETRS89_UTM31", 25832: "ETRS89_UTM32", 25833: "ETRS89_UTM33", 4258: "ETRS89_Lat-Lon",
                   # DHDN / Gauss-Krueger zones 2-5: the AdV writes easting (Rechtswert) first, as cim does
                   31466: "DE_DHDN_3GK2", 31467: "DE_DHDN_3GK3", 31468: "DE_DHDN_3GK4", 31469: "DE_DHDN_3GK5"}
_ADV_VERTICAL = {7837: "DE_DHHN2016_NH", 5783: "DE_DHHN92_NH", 5784: "DE_DHHN85_NOH"}
_ADV_PREFIX = "urn:adv:crs:"
_NCNAME_BAD = re.compile(r"[^A-Za-z0-9._-]")


def srs_name(crs: pyproj.CRS) -> str:
    """The srsName for ``crs``: the AdV URN for ETRS89/UTM + DHHN heights, else an EPSG URN."""
    h, v = crs_mod.horizontal_part(crs), crs_mod.vertical_part(crs)
    h_code, v_code = h.to_epsg(), v.to_epsg() if v is not None else None
    if h_code in _ADV_HORIZONTAL and (v is None or v_code in _ADV_VERTICAL):
        return _ADV_PREFIX + _ADV_HORIZONTAL[h_code] + (f"*{_ADV_VERTICAL[v_code]}" if v is not None else "")
    if crs.to_epsg():
        return f"urn:ogc:def:crs:EPSG::{crs.to_epsg()}"
    if crs.is_compound and h_code and v_code:
        return f"urn:ogc:def:crs,crs:EPSG::{h_code},crs:EPSG::{v_code}"
    raise CrsError(f"CityGML needs an EPSG (or AdV) coded CRS; {crs_mod.describe(crs)} has none")


def crs_from_srs_name(name: str) -> pyproj.CRS:
    """The CRS an srsName means: AdV URNs (a trailing geoid part like ``*GCG2016`` is ignored), EPSG URNs,
    ``EPSG:n`` and OGC http URIs."""
    if name.startswith(_ADV_PREFIX):
        parts = name[len(_ADV_PREFIX):].split("*")
        by_name_h = {v: k for k, v in _ADV_HORIZONTAL.items()}
        by_name_v = {v: k for k, v in _ADV_VERTICAL.items()}
        if parts[0] not in by_name_h or (len(parts) > 1 and parts[1] not in by_name_v):
            raise CrsError(f"unknown AdV srsName {name!r}")
        code = f"EPSG:{by_name_h[parts[0]]}" + (f"+{by_name_v[parts[1]]}" if len(parts) > 1 else "")
        return pyproj.CRS.from_user_input(code)
    try:
        return pyproj.CRS.from_user_input(name)
    except pyproj.exceptions.CRSError:
        raise CrsError(f"unknown srsName {name!r}") from None


def gml_id(building_id: str) -> str:
    """A valid ``gml:id`` (an XML NCName) for a building id: ids like ``DENW37AL1000joGl`` stay as they are;
    other characters become ``_`` and an id that does not start with a letter or ``_`` gets the prefix ``ID_``."""
    out = _NCNAME_BAD.sub("_", building_id)
    return out if out[:1].isalpha() or out[:1] == "_" else f"ID_{out}"


def function_code(attributes: dict) -> str | None:
    """The ``bldg:function`` of a building from its footprint attributes (keys in any case): ``function``, or an
    ALKIS ``gebaeudefunktion`` / ``gfk`` code that becomes ``31001_<code>`` (a code that has the prefix keeps
    it); None when the footprint carries none."""
    lowered = {str(k).lower(): v for k, v in attributes.items()}
    for key in ("function", "src_function", "src_bldg_function"):
        if lowered.get(key) not in (None, ""):
            return str(lowered[key])
    for key in ("src_gebaeudefunktion", "src_gfk", "src_funktion"):
        value = lowered.get(key)
        if value not in (None, ""):
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            return text if text.startswith(FUNCTION_PREFIX) else FUNCTION_PREFIX + text
    return None
