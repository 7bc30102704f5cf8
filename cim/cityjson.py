"""CityJSON 2.0 and CityJSONSeq writer/reader for building solids.

A building is handed over as one or more :class:`BuildingGeometry` values that share an ``id``: each carries one
geometry (a closed shell given as planar faces) at one LoD, e.g. an LoD 1.2 block and an LoD 2.2 model of the same
building. The writer groups them into one ``Building`` city object with one geometry per LoD, quantises all vertices
(``transform``), de-duplicates them, and writes semantic surfaces (``GroundSurface``/``WallSurface``/``RoofSurface``).

Reference system: CityJSON allows one ``https://www.opengis.net/def/crs/{auth}/0/{code}`` URL. A compound CRS with
its own EPSG code (e.g. EPSG:7415) is written as that code. A compound CRS without one (EPSG:25832 + EPSG:7837, the
Kaiserslautern job CRS) is written as its horizontal component in ``referenceSystem`` and the vertical component in
the extra metadata property ``+verticalReferenceSystem``; :func:`read_reference_system` puts the two back together.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj

from cim.errors import CrsError, InputError
from cim.fileutil import atomic_write

CITYJSON_VERSION = "2.0"
SURFACE_TYPES = ("GroundSurface", "WallSurface", "RoofSurface", "ClosureSurface", "OuterCeilingSurface",
                 "OuterFloorSurface")
_CRS_URL = "https://www.opengis.net/def/crs/{auth}/0/{code}"
_CRS_URL_RE = re.compile(r"^https?://www\.opengis\.net/def/crs/([A-Za-z]+)/[^/]+/([0-9A-Za-z]+)/?$")
_VERTICAL_KEY = "+verticalReferenceSystem"


@dataclass
class BuildingGeometry:
    """One building geometry at one LoD.

    ``faces``: planar polygons, each an (n, 3) array of vertices (outer ring only, not closed: the first vertex is
    not repeated), counter-clockwise seen from outside the solid. ``semantics``: one surface type per face
    ("GroundSurface", "WallSurface", "RoofSurface"; None for no semantics); ``surface_attributes``: optional
    extra properties per face (e.g. ``{"slope": 35.0, "azimuth": 180.0}``), written on the semantic surface.
    ``geometry_type``: "Solid" (one closed
    shell) or "MultiSurface" (for a model that could not be closed). Geometries that share an ``id`` are written as
    one city object; their attributes are merged in order.
    """

    id: str
    faces: list[np.ndarray]
    semantics: list[str | None]
    attributes: dict[str, Any] = field(default_factory=dict)
    lod: str = "2.2"
    geometry_type: str = "Solid"
    object_type: str = "Building"
    surface_attributes: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if len(self.faces) != len(self.semantics):
            raise ValueError(f"building {self.id}: {len(self.faces)} faces but {len(self.semantics)} semantics")
        if self.surface_attributes is not None and len(self.surface_attributes) != len(self.faces):
            raise ValueError(f"building {self.id}: surface_attributes must have one dict per face")
        if self.geometry_type not in ("Solid", "MultiSurface"):
            raise ValueError(f"building {self.id}: geometry_type must be Solid or MultiSurface")
        self.faces = [np.asarray(f, dtype=np.float64).reshape(-1, 3) for f in self.faces]

    @property
    def vertices(self) -> np.ndarray:
        """All face vertices stacked, (n, 3)."""
        return np.concatenate(self.faces) if self.faces else np.zeros((0, 3))


# --------------------------------------------------------------------------------------------------- reference system


def reference_system_urls(crs: pyproj.CRS | str | None) -> tuple[str | None, str | None]:
    """(referenceSystem URL, vertical URL or None) for ``crs``; a compound CRS without a code is split."""
    if crs is None:
        return None, None
    crs = pyproj.CRS.from_user_input(crs)
    whole = crs.to_authority(min_confidence=100)
    if whole is not None:
        return _CRS_URL.format(auth=whole[0], code=whole[1]), None
    if crs.is_compound and len(crs.sub_crs_list) == 2:
        horizontal, vertical = (c.to_authority(min_confidence=100) for c in crs.sub_crs_list)
        if horizontal is not None and vertical is not None:
            return (_CRS_URL.format(auth=horizontal[0], code=horizontal[1]),
                    _CRS_URL.format(auth=vertical[0], code=vertical[1]))
    raise CrsError(f"CityJSON needs a CRS with an authority code; {crs.name!r} has none")


def _crs_from_url(url: str) -> pyproj.CRS:
    m = _CRS_URL_RE.match(url.strip())
    if not m:
        return pyproj.CRS.from_user_input(url)
    return pyproj.CRS.from_user_input(f"{m.group(1).upper()}:{m.group(2)}")


def reference_system_from_metadata(metadata: dict[str, Any]) -> pyproj.CRS | None:
    """The CRS a CityJSON ``metadata`` object declares (compound again when cim split it)."""
    url = metadata.get("referenceSystem")
    if not url:
        return None
    horizontal = _crs_from_url(url)
    vertical_url = metadata.get(_VERTICAL_KEY)
    if vertical_url:
        vertical = _crs_from_url(vertical_url)
        return pyproj.CRS.from_user_input(
            f"{':'.join(horizontal.to_authority())}+{vertical.to_authority()[1]}"
        ) if horizontal.to_authority() and vertical.to_authority() else horizontal
    return horizontal


# ----------------------------------------------------------------------------------------------------------- writing


@dataclass
class _Quantiser:
    scale: float
    translate: np.ndarray

    @classmethod
    def for_points(cls, xyz: np.ndarray, scale: float) -> _Quantiser:
        translate = np.floor(xyz.min(axis=0)) if len(xyz) else np.zeros(3)
        return cls(scale, translate)

    def integers(self, xyz: np.ndarray) -> np.ndarray:
        return np.rint((xyz - self.translate) / self.scale).astype(np.int64)

    def transform(self) -> dict[str, Any]:
        return {"scale": [self.scale] * 3, "translate": [float(v) for v in self.translate]}


def _group(buildings: Iterable[BuildingGeometry]) -> dict[str, list[BuildingGeometry]]:
    groups: dict[str, list[BuildingGeometry]] = {}
    for b in buildings:
        groups.setdefault(b.id, []).append(b)
    return groups


def _encode_object(
    geoms: list[BuildingGeometry], quant: _Quantiser
) -> tuple[dict[str, Any], np.ndarray]:
    """City object for one building (all its LoDs) and its integer vertices (indices local to the object)."""
    rings: list[np.ndarray] = []
    for g in geoms:
        rings.extend(quant.integers(f) for f in g.faces)
    all_int = np.concatenate(rings) if rings else np.zeros((0, 3), np.int64)
    uniq, inverse = np.unique(all_int, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    geometries = []
    attributes: dict[str, Any] = {}
    offset = 0
    for g in geoms:
        surfaces: list[dict[str, Any]] = []
        surface_index: dict[str, int] = {}
        boundaries: list[list[list[int]]] = []
        values: list[int | None] = []
        extras = g.surface_attributes or [{}] * len(g.faces)
        for face, sem, extra in zip(g.faces, g.semantics, extras):
            idx = inverse[offset: offset + len(face)]
            offset += len(face)
            ring = _clean_ring(idx)
            if ring is None:
                continue
            boundaries.append([ring])
            if sem is None:
                values.append(None)
                continue
            surface = {**jsonable(extra), "type": sem} if extra else {"type": sem}
            key = json.dumps(surface, sort_keys=True) if len(surface) > 1 else sem  # plain types: no encoding
            if key not in surface_index:
                surface_index[key] = len(surfaces)
                surfaces.append(surface)
            values.append(surface_index[key])
        geometry: dict[str, Any] = {"type": g.geometry_type, "lod": str(g.lod)}
        if g.geometry_type == "Solid":
            geometry["boundaries"] = [boundaries]
            sem_values: Any = [values]
        else:
            geometry["boundaries"] = boundaries
            sem_values = values
        if surfaces:
            geometry["semantics"] = {"surfaces": surfaces, "values": sem_values}
        geometries.append(geometry)
        attributes.update(jsonable(g.attributes))
    obj: dict[str, Any] = {"type": geoms[0].object_type, "geometry": geometries}
    if attributes:
        obj["attributes"] = attributes
    if len(uniq):
        real = uniq * quant.scale + quant.translate
        obj["geographicalExtent"] = [*_round(real.min(axis=0)), *_round(real.max(axis=0))]
    return obj, uniq


def _clean_ring(idx: np.ndarray) -> list[int] | None:
    """Drop consecutive repeats (incl. last == first) that quantisation may create; None when < 3 remain."""
    if len(idx) == 0:
        return None
    keep = idx != np.concatenate((idx[-1:], idx[:-1]))  # each vertex against the one before it
    ring = idx[keep] if keep.any() else idx[:1]
    if len(ring) < 3:
        return None
    return ring.tolist()


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


def _finite_or_none(value: float) -> float | None:
    """``value``, or None for NaN and infinities (JSON has neither)."""
    return value if math.isfinite(value) else None


def jsonable(value: Any, number: Callable[[float], float | None] = _finite_or_none) -> Any:
    """``value`` with numpy arrays and scalars made plain lists, bools and numbers for ``json``; every float goes
    through ``number`` (default: NaN and infinities become null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, number) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, number) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), number)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return number(float(value))
    return value


def _renumber(obj: dict[str, Any], mapping: np.ndarray) -> None:
    """Replace every vertex index i of ``obj`` by ``mapping[i]``."""
    for geometry in obj["geometry"]:
        shells = geometry["boundaries"] if geometry["type"] == "Solid" else [geometry["boundaries"]]
        for shell in shells:
            for surface in shell:
                for ring in surface:
                    ring[:] = mapping[np.asarray(ring, dtype=np.int64)].tolist()


def _metadata(crs: pyproj.CRS | str | None, extent: np.ndarray | None,
              metadata: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    url, vertical = reference_system_urls(crs)
    if url:
        meta["referenceSystem"] = url
    if vertical:
        meta[_VERTICAL_KEY] = vertical
    if extent is not None:
        meta["geographicalExtent"] = extent
    meta.update(jsonable(metadata or {}))
    return meta


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cityjson_dict(
    buildings: Sequence[BuildingGeometry],
    crs: pyproj.CRS | str | None,
    *,
    scale: float = 0.001,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The CityJSON 2.0 document (a dict) for ``buildings``; see :func:`write_cityjson`."""
    if scale <= 0:
        raise ValueError("scale must be > 0")
    geoms = list(buildings)
    allxyz = np.concatenate([g.vertices for g in geoms]) if geoms else np.zeros((0, 3))
    quant = _Quantiser.for_points(allxyz, scale)
    city_objects: dict[str, Any] = {}
    encoded = [(bid, *_encode_object(group, quant)) for bid, group in _group(geoms).items()]
    blocks = [verts for _, _, verts in encoded]
    stacked = np.concatenate(blocks) if blocks else np.zeros((0, 3), np.int64)
    # shared vertices of neighbouring buildings are stored once
    vertices, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = 0
    for bid, obj, verts in encoded:
        _renumber(obj, inverse[n: n + len(verts)])
        n += len(verts)
        city_objects[bid] = obj
    extent = None
    if len(vertices):
        real = vertices * scale + quant.translate
        extent = [*_round(real.min(axis=0)), *_round(real.max(axis=0))]
    return {
        "type": "CityJSON",
        "version": CITYJSON_VERSION,
        "transform": quant.transform(),
        "metadata": _metadata(crs, extent, metadata),
        "CityObjects": city_objects,
        "vertices": vertices.tolist(),
    }


def write_cityjson(
    path: str | Path,
    buildings: Sequence[BuildingGeometry],
    crs: pyproj.CRS | str | None,
    *,
    scale: float = 0.001,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``buildings`` as one CityJSON 2.0 file (atomic, deterministic); returns the path.

    Geometries sharing an id become one ``Building`` with one geometry per LoD. ``scale`` is the quantisation step
    in CRS units (default 1 mm); ``translate`` is the floor of the minimum coordinates. ``metadata`` entries are added
    to (and override) the generated ``referenceSystem`` and ``geographicalExtent``.
    """
    doc = cityjson_dict(buildings, crs, scale=scale, metadata=metadata)
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(_dumps(doc), encoding="utf-8")
    return path


def write_cityjsonseq(
    path: str | Path,
    buildings: Iterable[BuildingGeometry],
    crs: pyproj.CRS | str | None,
    *,
    translate: Sequence[float] | None = None,
    scale: float = 0.001,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``buildings`` as CityJSONSeq (``.city.jsonl``): a header line, then one CityJSONFeature per building.

    Streams: only one building's geometries are held at a time when ``buildings`` is a generator whose items with
    the same id are consecutive (non-consecutive repeats of an id raise ValueError). ``translate`` (default: the
    floor of the first building's minimum) is the shared quantisation origin of all features.
    """
    path = Path(path)
    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        quant: _Quantiser | None = None
        if translate is not None:
            quant = _Quantiser(scale, np.asarray(translate, dtype=np.float64))
        header_written = False
        seen: set[str] = set()

        def emit(group: list[BuildingGeometry]) -> None:
            nonlocal quant, header_written
            if quant is None:
                quant = _Quantiser.for_points(np.concatenate([g.vertices for g in group]), scale)
            if not header_written:
                _write_seq_header(fh, quant, crs, metadata)
                header_written = True
            obj, verts = _encode_object(group, quant)
            feature = {"type": "CityJSONFeature", "id": group[0].id, "CityObjects": {group[0].id: obj},
                       "vertices": verts.tolist()}
            fh.write(_dumps(feature) + "\n")

        group: list[BuildingGeometry] = []
        for b in buildings:
            if group and b.id != group[0].id:
                emit(group)
                group = []
            if not group:
                if b.id in seen:
                    raise ValueError(f"building {b.id}: its geometries are not consecutive")
                seen.add(b.id)
            group.append(b)
        if group:
            emit(group)
        if not header_written:
            _write_seq_header(fh, quant or _Quantiser(scale, np.zeros(3)), crs, metadata)
    return path


def _write_seq_header(fh: Any, quant: _Quantiser, crs: pyproj.CRS | str | None,
                      metadata: dict[str, Any] | None) -> None:
    header = {"type": "CityJSON", "version": CITYJSON_VERSION, "transform": quant.transform(),
              "metadata": _metadata(crs, None, metadata), "CityObjects": {}, "vertices": []}
    fh.write(_dumps(header) + "\n")


def write_cityjson_streamed(
    path: str | Path,
    seq_path: str | Path | None,
    parts: Sequence[Callable[[], list[list[BuildingGeometry]]]],
    crs: pyproj.CRS | str | None,
    work_dir: str | Path,
    *,
    scale: float = 0.001,
    metadata: dict[str, Any] | None = None,
) -> int:
    """What :func:`write_cityjson` (and, with ``seq_path``, :func:`write_cityjsonseq`) write for all buildings of
    ``parts``, byte for byte, holding one part at a time: each part loads a list of buildings (the geometries of
    one id each; an id in one part only). Buildings are ordered by id as the writers order sorted input.

    Two passes over the parts: the first finds the ids and the quantisation origins, the second encodes every
    building into a scratch file in ``work_dir``; then the vertices shared by all (integers, the only thing held
    for the whole set) are de-duplicated and the objects copied out in id order with their indices renumbered.
    Returns the number of buildings.
    """
    if scale <= 0:
        raise ValueError("scale must be > 0")
    lows: dict[str, np.ndarray] = {}  # id -> minimum of the building's vertices
    for load in parts:
        for group in load():
            if group[0].id in lows:
                raise ValueError(f"building {group[0].id} is in two parts")
            lows[group[0].id] = np.concatenate([g.vertices for g in group]).min(axis=0)
    ids = sorted(lows)
    quant = _Quantiser.for_points(np.array([lows[b] for b in ids]).reshape(-1, 3), scale)
    seq_quant = _Quantiser.for_points(lows[ids[0]][None] if ids else np.zeros((0, 3)), scale)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    spans: dict[str, tuple[int, int, int, int]] = {}  # id -> object offset, length, first vertex, vertex count
    feature_at: dict[str, tuple[int, int]] = {}  # id -> feature line offset, length
    blocks: list[np.ndarray] = []
    n = 0
    with tempfile.TemporaryFile(dir=work_dir) as ofh, tempfile.TemporaryFile(dir=work_dir) as ffh:
        for load in parts:
            for group in load():
                bid = group[0].id
                obj, verts = _encode_object(group, quant)
                text = _dumps(obj).encode("utf-8")
                spans[bid] = (ofh.tell(), len(text), n, len(verts))
                ofh.write(text)
                blocks.append(verts)
                n += len(verts)
                if seq_path is not None:
                    fobj, fverts = _encode_object(group, seq_quant)
                    line = (_dumps({"type": "CityJSONFeature", "id": bid, "CityObjects": {bid: fobj},
                                    "vertices": fverts.tolist()}) + "\n").encode("utf-8")
                    feature_at[bid] = (ffh.tell(), len(line))
                    ffh.write(line)
        stacked = np.concatenate(blocks) if blocks else np.zeros((0, 3), np.int64)
        del blocks
        vertices, inverse = np.unique(stacked, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        extent = None
        if len(vertices):
            real = vertices * scale + quant.translate
            extent = [*_round(real.min(axis=0)), *_round(real.max(axis=0))]
        head = {"type": "CityJSON", "version": CITYJSON_VERSION, "transform": quant.transform(),
                "metadata": _metadata(crs, extent, metadata)}
        with atomic_write(Path(path)) as tmp, tmp.open("w", encoding="utf-8") as out:
            out.write(_dumps(head)[:-1] + ',"CityObjects":{')
            for k, bid in enumerate(ids):
                offset, length, first, count = spans[bid]
                ofh.seek(offset)
                obj = json.loads(ofh.read(length))
                _renumber(obj, inverse[first: first + count])
                out.write(("," if k else "") + _dumps(bid) + ":" + _dumps(obj))
            out.write('},"vertices":' + _dumps(vertices.tolist()) + "}")
        if seq_path is not None:
            with atomic_write(Path(seq_path)) as tmp, tmp.open("w", encoding="utf-8") as out:
                _write_seq_header(out, seq_quant, crs, metadata)
                for bid in ids:
                    offset, length = feature_at[bid]
                    ffh.seek(offset)
                    out.write(ffh.read(length).decode("utf-8"))
    return len(ids)


# ----------------------------------------------------------------------------------------------------------- reading


def _load_documents(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header/document, [feature documents]) of a CityJSON file or a CityJSONSeq file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text), []
    except json.JSONDecodeError:
        pass
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        docs = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not CityJSON or CityJSONSeq: {exc}") from exc
    if not docs:
        raise InputError(path, "empty file")
    return docs[0], docs[1:]


def read_reference_system(path: str | Path) -> pyproj.CRS | None:
    """The CRS declared in a CityJSON / CityJSONSeq file's metadata (None when absent)."""
    header, _ = _load_documents(Path(path))
    return reference_system_from_metadata(header.get("metadata") or {})


def read_cityjson(path: str | Path, *, object_types: Sequence[str] = ("Building", "BuildingPart")
                  ) -> list[BuildingGeometry]:
    """Read the Solid / MultiSurface / CompositeSurface geometries of buildings from CityJSON(Seq).

    One :class:`BuildingGeometry` per (city object, geometry), in file order; real coordinates
    (``transform`` applied). Holes (inner rings) are dropped: faces carry outer rings only.
    """
    path = Path(path)
    header, features = _load_documents(path)
    if header.get("type") != "CityJSON":
        raise InputError(path, f"not a CityJSON document (type is {header.get('type')!r})")
    transform = header.get("transform") or {"scale": [1, 1, 1], "translate": [0, 0, 0]}
    scale = np.asarray(transform.get("scale", [1, 1, 1]), dtype=np.float64)
    translate = np.asarray(transform.get("translate", [0, 0, 0]), dtype=np.float64)
    out: list[BuildingGeometry] = []
    for doc in [header, *features]:
        verts = np.asarray(doc.get("vertices") or [], dtype=np.float64).reshape(-1, 3) * scale + translate
        for oid, obj in (doc.get("CityObjects") or {}).items():
            if obj.get("type") not in object_types:
                continue
            for geometry in obj.get("geometry") or []:
                try:
                    g = _decode_geometry(oid, obj, geometry, verts)
                except (IndexError, KeyError, TypeError, ValueError) as exc:
                    raise InputError(path, f"city object {oid}: malformed geometry ({exc})") from exc
                if g is not None:
                    out.append(g)
    return out


def _decode_geometry(oid: str, obj: dict[str, Any], geometry: dict[str, Any],
                     verts: np.ndarray) -> BuildingGeometry | None:
    gtype = geometry.get("type")
    if gtype == "Solid":
        surfaces_list = [s for shell in geometry["boundaries"][:1] for s in shell]
        values = (geometry.get("semantics") or {}).get("values")
        values = values[0] if values else None
    elif gtype in ("MultiSurface", "CompositeSurface"):
        surfaces_list = geometry["boundaries"]
        values = (geometry.get("semantics") or {}).get("values")
    else:
        return None
    sem_surfaces = (geometry.get("semantics") or {}).get("surfaces") or []
    faces, semantics, extras = [], [], []
    for i, surface in enumerate(surfaces_list):
        faces.append(verts[np.asarray(surface[0], dtype=np.int64)])
        v = values[i] if values is not None and i < len(values) else None
        semantics.append(sem_surfaces[v]["type"] if v is not None else None)
        extras.append({k: val for k, val in sem_surfaces[v].items() if k not in ("type", "parent", "children")}
                      if v is not None else {})
    return BuildingGeometry(
        id=oid, faces=faces, semantics=semantics, attributes=dict(obj.get("attributes") or {}),
        lod=str(geometry.get("lod")), geometry_type="Solid" if gtype == "Solid" else "MultiSurface",
        object_type=obj.get("type", "Building"), surface_attributes=extras if any(extras) else None,
    )
