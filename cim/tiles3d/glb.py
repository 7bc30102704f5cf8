"""Binary glTF 2.0 (.glb) writers for 3D Tiles 1.1 content: point clouds and triangle meshes, plus a reader.

Content is given in a local east-north-up frame (z up). glTF is y-up and 3D Tiles rotates glTF content from y-up to
z-up at runtime, so every node carries :data:`Y_UP_FROM_Z_UP` in its matrix.

* :func:`points_glb`: POINTS primitive, positions quantized to UNSIGNED_SHORT relative to a per-content origin
  (``KHR_mesh_quantization``, dequantized by the node matrix), linear ``COLOR_0``, per-point properties as
  ``EXT_structural_metadata`` property attributes.
* :func:`mesh_glb`: TRIANGLES with normals, ``EXT_mesh_features`` feature ids and an ``EXT_structural_metadata``
  property table (one row per feature).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GLB_MAGIC = 0x46546C67
_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942

BYTE, UNSIGNED_BYTE, SHORT, UNSIGNED_SHORT, UNSIGNED_INT, FLOAT = 5120, 5121, 5122, 5123, 5125, 5126
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
POINTS, TRIANGLES = 0, 4

_COMPONENT_TYPES = {
    np.dtype(np.int8): BYTE,
    np.dtype(np.uint8): UNSIGNED_BYTE,
    np.dtype(np.int16): SHORT,
    np.dtype(np.uint16): UNSIGNED_SHORT,
    np.dtype(np.uint32): UNSIGNED_INT,
    np.dtype(np.float32): FLOAT,
}
_DTYPES = {v: k for k, v in _COMPONENT_TYPES.items()}
_METADATA_COMPONENT = {
    np.dtype(np.int8): "INT8", np.dtype(np.uint8): "UINT8", np.dtype(np.int16): "INT16",
    np.dtype(np.uint16): "UINT16", np.dtype(np.int32): "INT32", np.dtype(np.uint32): "UINT32",
    np.dtype(np.int64): "INT64", np.dtype(np.uint64): "UINT64", np.dtype(np.float32): "FLOAT32",
    np.dtype(np.float64): "FLOAT64",
}
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
_NCOMP = {v: k for k, v in _TYPES.items()}

#: Maps local ENU (z up) to glTF's y-up axes: (e, n, u) -> (e, u, -n).
Y_UP_FROM_Z_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=float)


def apply_affine(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(n,3) points through a 4x4 affine matrix (result with contiguous columns).

    No BLAS product: a large one wakes OpenBLAS's thread pool, whose spinning threads take the CPU from the other
    Dask worker threads."""
    out = np.empty((3, len(pts)))
    for k in range(3):
        out[k] = matrix[k, 3]
        for a in range(3):
            out[k] += matrix[k, a] * pts[:, a]
    return out.T


def column_major(matrix: np.ndarray) -> list[float]:
    """A 4x4 matrix as the 16 column-major numbers glTF and 3D Tiles use."""
    return [float(v) for v in np.asarray(matrix, float).reshape(4, 4).T.ravel()]


class GltfBuilder:
    """Accumulates buffer views and accessors of a single-buffer glTF and serialises it as GLB.

    ``meshopt``: vertex attribute views are stored compressed (``EXT_meshopt_compression``, required; their
    uncompressed layout lives in a fallback buffer without data).
    """

    def __init__(self, *, meshopt: bool = False) -> None:
        self.meshopt = meshopt
        self.gltf: dict = {
            "asset": {"version": "2.0", "generator": "cim"},
            "buffers": [],
            "bufferViews": [],
            "accessors": [],
        }
        self._chunks: list[bytes | memoryview] = []
        self._views: list[memoryview] = []  # data of every buffer view
        self._vertex_views: dict[int, tuple[int, int]] = {}  # view -> (byte stride, element count)
        self._length = 0
        self._extensions_used: set[str] = set()
        self._extensions_required: set[str] = set()

    def use_extension(self, name: str, required: bool = False) -> None:
        self._extensions_used.add(name)
        if required:
            self._extensions_required.add(name)

    def add_view(self, data: bytes | memoryview | np.ndarray, *, target: int | None = None,
                 stride: int | None = None, align: int = 8) -> int:
        """A buffer view over ``data`` (any contiguous buffer; kept by reference and copied once in :meth:`to_glb`)."""
        data = memoryview(data).cast("B")
        pad = (-self._length) % align
        if pad:
            self._chunks.append(b"\0" * pad)
            self._length += pad
        view: dict = {"buffer": 0, "byteOffset": self._length, "byteLength": len(data)}
        if stride is not None:
            view["byteStride"] = stride
        if target is not None:
            view["target"] = target
        self._chunks.append(data)
        self._views.append(data)
        self._length += len(data)
        self.gltf["bufferViews"].append(view)
        return len(self.gltf["bufferViews"]) - 1

    def add_vertex_attribute(self, values: np.ndarray, *, normalized: bool = False, minmax: bool = False) -> int:
        """Accessor over ``values`` ((n,) or (n,k)); elements padded to 4-byte strides as glTF requires."""
        values = np.asarray(values)
        if values.ndim == 1:
            values = values[:, None]
        k = values.shape[1]
        padded = padded_rows(len(values), k, values.dtype)
        padded[:, :k] = values
        bounds = (values.min(axis=0), values.max(axis=0)) if minmax and len(values) else None
        return self.add_padded_attribute(padded, k, normalized=normalized, bounds=bounds)

    def add_padded_attribute(self, padded: np.ndarray, k: int, *, normalized: bool = False,
                             bounds: tuple[np.ndarray, np.ndarray] | None = None) -> int:
        """Accessor over the first ``k`` columns of ``padded`` (C-contiguous rows of a multiple of 4 bytes, e.g.
        from :func:`padded_rows`), stored without copying; ``bounds``: the accessor's (min, max) per component."""
        stride = padded.shape[1] * padded.dtype.itemsize
        if stride % 4 or not padded.flags.c_contiguous:
            raise ValueError("vertex attribute rows must be contiguous and a multiple of 4 bytes")
        size = padded.dtype.itemsize * k
        view = self.add_view(padded, target=ARRAY_BUFFER, stride=stride if stride != size else None, align=4)
        self._vertex_views[view] = (stride, len(padded))
        return self._accessor(view, padded.dtype, len(padded), k, normalized, bounds)

    def add_indices(self, indices: np.ndarray) -> int:
        indices = np.ascontiguousarray(indices).ravel()
        view = self.add_view(indices, target=ELEMENT_ARRAY_BUFFER, align=4)
        return self._accessor(view, indices.dtype, len(indices), 1, False, None)

    def _accessor(self, view: int, dtype: np.dtype, count: int, k: int, normalized: bool,
                  bounds: tuple[np.ndarray, np.ndarray] | None) -> int:
        acc: dict = {"bufferView": view, "componentType": _COMPONENT_TYPES[np.dtype(dtype)], "count": int(count),
                     "type": _TYPES[k]}
        if normalized:
            acc["normalized"] = True
        if bounds is not None:
            conv = float if np.dtype(dtype).kind == "f" else int
            acc["min"] = [conv(v) for v in bounds[0]]
            acc["max"] = [conv(v) for v in bounds[1]]
        self.gltf["accessors"].append(acc)
        return len(self.gltf["accessors"]) - 1

    def to_glb(self) -> bytes:
        gltf = dict(self.gltf)
        chunks, length = self._chunks, self._length
        buffers: list[dict] = []
        if self.meshopt and self._vertex_views:
            self.use_extension(MESHOPT, required=True)
            gltf["bufferViews"], chunks, length = self._compressed()
            buffers = [{"byteLength": self._length, "extensions": {MESHOPT: {"fallback": True}}}]
        if self._extensions_used:
            gltf["extensionsUsed"] = sorted(self._extensions_used)
        if self._extensions_required:
            gltf["extensionsRequired"] = sorted(self._extensions_required)
        pad = (-length) % 4
        gltf["buffers"] = [{"byteLength": length + pad}, *buffers]
        text = json.dumps(gltf, separators=(",", ":"), sort_keys=True).encode("utf-8")
        text += b" " * ((-len(text)) % 4)
        total = 12 + 8 + len(text) + 8 + length + pad
        return b"".join([
            struct.pack("<III", GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), _JSON_CHUNK), text,
            struct.pack("<II", length + pad, _BIN_CHUNK), *chunks, b"\0" * pad,
        ])

    def _compressed(self) -> tuple[list[dict], list[bytes | memoryview], int]:
        """Buffer views and GLB chunks with every vertex attribute view compressed (mode ATTRIBUTES).

        A compressed view keeps its uncompressed place in buffer 1 (the fallback buffer) and points to its
        compressed bytes in buffer 0 (the GLB binary chunk); other views move to their new place in buffer 0.
        """
        encode = meshopt_encoder()
        views, chunks, length = [], [], 0
        for i, (view, data) in enumerate(zip(self.gltf["bufferViews"], self._views)):
            view = dict(view)
            pad = (-length) % 4
            if pad:
                chunks.append(b"\0" * pad)
                length += pad
            if i in self._vertex_views:
                stride, count = self._vertex_views[i]
                data = encode(np.frombuffer(data, np.uint8).reshape(count, stride), count, stride)
                view["buffer"] = 1
                view["extensions"] = {MESHOPT: {"buffer": 0, "byteOffset": length, "byteLength": len(data),
                                                "byteStride": stride, "count": count, "mode": "ATTRIBUTES"}}
            else:
                view["byteOffset"] = length
            chunks.append(data)
            length += len(data)
            views.append(view)
        return views, chunks, length


MESHOPT = "EXT_meshopt_compression"


def _meshoptimizer():
    """The optional ``meshoptimizer`` package (ImportError with an install hint when it is missing)."""
    try:
        import meshoptimizer
    except ImportError as exc:
        raise ImportError("EXT_meshopt_compression needs the meshoptimizer package (pip install meshoptimizer)") \
            from exc
    return meshoptimizer


def meshopt_encoder():
    """meshoptimizer's vertex codec, set to bitstream version 0 (the one EXT_meshopt_compression specifies)."""
    meshoptimizer = _meshoptimizer()
    meshoptimizer.encode_vertex_version(0)
    return meshoptimizer.encode_vertex_buffer


def glb_buffers(gltf: dict, binary: bytes) -> list[bytes]:
    """Contents of every buffer of a GLB: the binary chunk, then fallback buffers of ``EXT_meshopt_compression``
    rebuilt by decoding their compressed views (needs the ``meshoptimizer`` package)."""
    buffers = [binary] + [bytes(0)] * (len(gltf.get("buffers", [])) - 1)
    compressed = [v for v in gltf.get("bufferViews", []) if MESHOPT in v.get("extensions", {})]
    if not compressed:
        return buffers
    meshoptimizer = _meshoptimizer()
    rebuilt = {i: bytearray(gltf["buffers"][i]["byteLength"]) for i in {v["buffer"] for v in compressed}}
    for view in compressed:
        ext = view["extensions"][MESHOPT]
        if ext["mode"] != "ATTRIBUTES" or ext.get("filter", "NONE") != "NONE":
            raise ValueError(f"unsupported meshopt mode {ext['mode']} / filter {ext.get('filter')}")
        src = buffers[ext.get("buffer", 0)]
        start = ext.get("byteOffset", 0)
        decoded = meshoptimizer.decode_vertex_buffer(ext["count"], ext["byteStride"],
                                                     src[start: start + ext["byteLength"]],
                                                     dtype=np.dtype(f"V{ext['byteStride']}"))
        offset = view.get("byteOffset", 0)
        rebuilt[view["buffer"]][offset: offset + view["byteLength"]] = decoded.tobytes()
    for i, data in rebuilt.items():
        buffers[i] = bytes(data)
    return buffers


def padded_rows(n: int, k: int, dtype: np.dtype) -> np.ndarray:
    """Zeroed (n, w) array whose rows hold ``k`` values of ``dtype`` padded to a multiple of 4 bytes."""
    itemsize = np.dtype(dtype).itemsize
    width = -(-k * itemsize // 4) * 4 // itemsize
    return np.zeros((n, width), dtype) if width != k else np.empty((n, k), dtype)


# -- point clouds ---------------------------------------------------------------------------------------------

@dataclass
class PointProperty:
    """One per-point property stored as an EXT_structural_metadata property attribute.

    ``values`` must be int8/uint8/int16/uint16/float32 (the component types glTF vertex attributes allow);
    ``offset``/``scale`` (float64 in JSON) restore the value as ``offset + scale * stored``, which is how wide
    values such as GPS time stay float64-exact in their leading digits.
    """

    name: str
    values: np.ndarray
    offset: float | None = None
    scale: float | None = None
    description: str | None = None

    @property
    def attribute(self) -> str:
        return "_" + self.name.upper()

    def class_property(self) -> dict:
        prop: dict = {"type": "SCALAR", "componentType": _METADATA_COMPONENT[np.dtype(self.values.dtype)]}
        if self.description:
            prop["description"] = self.description
        if self.offset is not None or self.scale is not None:
            prop["offset"] = 0.0
            prop["scale"] = 1.0
        return prop


def column_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (min, max) of an (n,k) array, one column at a time (fast for column-major arrays)."""
    k = values.shape[1]
    return (np.array([values[:, a].min() for a in range(k)]), np.array([values[:, a].max() for a in range(k)]))


def quantize_positions(local: np.ndarray, lo: np.ndarray | None = None,
                       hi: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UNSIGNED_SHORT positions and the (origin, step) that restore them: ``origin + step * q``.

    Returns ``q`` as (n,4) rows (the 4th column is the zero padding glTF needs), computed column by column in one
    pass; ``lo``/``hi``: the AABB of ``local`` when known (saves a pass).
    """
    local = np.asarray(local, float)
    lo, hi = column_bounds(local) if lo is None or hi is None else (np.asarray(lo, float), np.asarray(hi, float))
    step = np.maximum(hi - lo, 1e-6) / 65535.0
    inv = 1.0 / step
    q = padded_rows(len(local), 3, np.uint16)
    work = np.empty(len(local))
    for a in range(3):
        np.subtract(local[:, a], lo[a], out=work)
        work *= inv[a]
        work += 0.5
        np.minimum(work, 65535.0, out=work)
        q[:, a] = work  # truncation of non-negative values: rounding to the nearest step
    return q, lo, step


def _quantized_max(lo: np.ndarray, hi: np.ndarray, step: np.ndarray) -> list[int]:
    """Largest stored value per axis (the point at ``hi``), computed as :func:`quantize_positions` does."""
    return [int(min((hi[a] - lo[a]) * (1.0 / step[a]) + 0.5, 65535.0)) for a in range(3)]


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1)."""
    c = np.asarray(c, np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


@lru_cache(maxsize=4)
def _linear16_table(bits: int) -> np.ndarray:
    """16-bit linear value of every ``bits``-bit sRGB code."""
    codes = np.arange(1 << bits, dtype=np.float32) / np.float32((1 << bits) - 1)
    return np.rint(srgb_to_linear(codes) * 65535).astype(np.uint16)


def linear_colors(channels: list[np.ndarray] | np.ndarray, bits: int) -> np.ndarray:
    """(n,4) linear 16-bit ``COLOR_0`` rows (4th column: padding) of raw sRGB ``channels`` of ``bits`` bits.

    ``channels``: red, green and blue arrays (or an (n,3) array); values above ``2**bits - 1`` count as full.
    """
    table = _linear16_table(bits)
    channels = [channels[:, c] for c in range(3)] if isinstance(channels, np.ndarray) else channels
    out = padded_rows(len(channels[0]), 3, np.uint16)
    for c, raw in enumerate(channels):
        raw = np.asarray(raw)
        np.take(table, raw if raw.dtype.kind in "ui" else np.rint(raw).astype(np.int64), out=out[:, c], mode="clip")
    return out


def points_glb(
    local: np.ndarray,
    *,
    rgb: np.ndarray | None = None,
    color: np.ndarray | None = None,
    properties: list[PointProperty] | None = None,
    class_name: str = "point",
    schema: dict | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    meshopt: bool = False,
) -> bytes:
    """GLB with one POINTS primitive.

    ``local``: (n,3) float64 positions in the tile's local ENU frame; ``bounds``: their AABB when known;
    ``rgb``: (n,3) sRGB values in [0, 1] (converted to linear ``COLOR_0`` here), or ``color``: linear 16-bit rows
    from :func:`linear_colors` ((n,4), stored without copying, or (n,3)); ``properties``: per-point property
    attributes of class ``class_name`` (``schema`` is the EXT_structural_metadata schema holding that class;
    built from ``properties`` if omitted); ``meshopt``: compress the vertex data (``EXT_meshopt_compression``).
    """
    local = np.asarray(local, float)
    if len(local) == 0:
        raise ValueError("a point content needs at least one point")
    b = GltfBuilder(meshopt=meshopt)
    b.use_extension("KHR_mesh_quantization", required=True)
    lo, hi = column_bounds(local) if bounds is None else (np.asarray(v, float) for v in bounds)
    q, origin, step = quantize_positions(local, lo, hi)
    top = _quantized_max(origin, hi, step)
    attributes = {"POSITION": b.add_padded_attribute(q, 3, bounds=([0, 0, 0], top))}
    if rgb is not None:
        lin = srgb_to_linear(np.clip(rgb, 0.0, 1.0))
        color = np.rint(lin * 65535).astype(np.uint16)
    if color is not None:
        if color.shape[1] == 4 and color.flags.c_contiguous:
            attributes["COLOR_0"] = b.add_padded_attribute(color, 3, normalized=True)
        else:
            attributes["COLOR_0"] = b.add_vertex_attribute(color[:, :3], normalized=True)
    primitive: dict = {"attributes": attributes, "mode": POINTS, "material": 0}
    if properties:
        b.use_extension("EXT_structural_metadata")
        mapping = {}
        for prop in properties:
            attributes[prop.attribute] = b.add_vertex_attribute(np.asarray(prop.values))
            entry: dict = {"attribute": prop.attribute}
            if prop.offset is not None:
                entry["offset"] = float(prop.offset)
            if prop.scale is not None:
                entry["scale"] = float(prop.scale)
            mapping[prop.name] = entry
        if schema is None:
            schema = {"id": "cim_points", "classes": {class_name: {
                "properties": {p.name: p.class_property() for p in properties}}}}
        b.gltf["extensions"] = {"EXT_structural_metadata": {
            "schema": schema,
            "propertyAttributes": [{"class": class_name, "properties": mapping}],
        }}
        primitive["extensions"] = {"EXT_structural_metadata": {"propertyAttributes": [0]}}
    b.use_extension("KHR_materials_unlit")
    b.gltf["materials"] = [{"pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 1.0},
                            "extensions": {"KHR_materials_unlit": {}}}]
    placement = np.eye(4)
    placement[:3, :3] = np.diag(step)
    placement[:3, 3] = origin
    b.gltf["meshes"] = [{"primitives": [primitive]}]
    b.gltf["nodes"] = [{"mesh": 0, "matrix": column_major(Y_UP_FROM_Z_UP @ placement)}]
    b.gltf["scenes"] = [{"nodes": [0]}]
    b.gltf["scene"] = 0
    return b.to_glb()


# -- meshes ---------------------------------------------------------------------------------------------------

def _table_property(b: GltfBuilder, values: np.ndarray | list, count: int, name: str) -> tuple[dict, dict]:
    """(class property, property-table property) for one column of a property table."""
    arr = np.asarray(values)
    if len(arr) != count:
        raise ValueError(f"property {name!r} has {len(arr)} values, expected one per feature ({count})")
    if arr.dtype.kind in "OUS":
        encoded = [v if isinstance(v, bytes) else ("" if v is None else str(v)).encode("utf-8") for v in arr.tolist()]
        offsets = np.zeros(count + 1, np.uint64)
        offsets[1:] = np.cumsum([len(e) for e in encoded])
        otype = np.uint32 if offsets[-1] < 2**32 else np.uint64
        # a buffer view holds at least one byte: when every string is empty, one unused byte (offsets all 0)
        values_view = b.add_view(b"".join(encoded) or b"\0")
        offsets_view = b.add_view(offsets.astype(otype).tobytes())
        return ({"type": "STRING"},
                {"values": values_view, "stringOffsets": offsets_view,
                 "stringOffsetType": "UINT32" if otype is np.uint32 else "UINT64"})
    if arr.dtype.kind == "b":
        bits = np.packbits(arr.astype(np.uint8), bitorder="little")
        return {"type": "BOOLEAN"}, {"values": b.add_view(bits.tobytes())}
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"property {name!r}: unsupported dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr)
    return ({"type": "SCALAR", "componentType": _METADATA_COMPONENT[arr.dtype]},
            {"values": b.add_view(arr.tobytes())})


def mesh_glb(
    positions: np.ndarray,
    indices: np.ndarray,
    normals: np.ndarray | None = None,
    feature_ids: np.ndarray | None = None,
    properties: dict[str, np.ndarray] | None = None,
    class_name: str = "building",
    *,
    color: tuple[float, float, float, float] = (0.85, 0.83, 0.8, 1.0),
    double_sided: bool = True,
) -> bytes:
    """GLB with one TRIANGLES primitive.

    ``positions``: (n,3) float64 local ENU coordinates (stored as float32 relative to their bounding-box centre,
    which the node translation restores); ``indices``: (m,3) vertex indices; ``normals``: (n,3) (normalised here);
    ``feature_ids``: (n,) feature index per vertex (``EXT_mesh_features``); ``properties``: one array per
    property with one value per feature (numbers, booleans or strings) stored as an ``EXT_structural_metadata``
    property table of class ``class_name``.
    """
    positions = np.asarray(positions, float)
    indices = np.asarray(indices).reshape(-1, 3)
    n = len(positions)
    if n == 0 or len(indices) == 0:
        raise ValueError("a mesh content needs vertices and triangles")
    if indices.min() < 0 or indices.max() >= n:
        raise ValueError("triangle indices out of range")
    b = GltfBuilder()
    centre = (positions.min(axis=0) + positions.max(axis=0)) / 2.0
    rel = (positions - centre).astype(np.float32)
    attributes = {"POSITION": b.add_vertex_attribute(rel, minmax=True)}
    if normals is not None:
        nrm = np.asarray(normals, np.float64).reshape(n, 3)
        length = np.linalg.norm(nrm, axis=1, keepdims=True)
        bad = ~np.isfinite(length[:, 0]) | (length[:, 0] < 1e-12)
        nrm = np.where(bad[:, None], np.array([0.0, 0.0, 1.0]), nrm / np.where(bad[:, None], 1.0, length))
        attributes["NORMAL"] = b.add_vertex_attribute(nrm.astype(np.float32))
    primitive: dict = {"attributes": attributes, "mode": TRIANGLES, "material": 0}
    idx_dtype = np.uint16 if n <= 65535 else np.uint32
    primitive["indices"] = b.add_indices(indices.astype(idx_dtype))
    if feature_ids is not None:
        fid = np.asarray(feature_ids).reshape(n)
        top = int(fid.max()) if n else 0
        fdtype = np.uint8 if top < 255 else np.uint16 if top < 65535 else np.float32
        if fdtype is np.float32 and top >= 2**24:
            raise ValueError("feature ids above 2**24 cannot be stored exactly")
        b.use_extension("EXT_mesh_features")
        attributes["_FEATURE_ID_0"] = b.add_vertex_attribute(fid.astype(fdtype))
        feature: dict = {"featureCount": int(len(np.unique(fid))), "attribute": 0}
        if properties:
            count = len(next(iter(properties.values())))
            if top >= count:
                raise ValueError(f"feature id {top} has no row in the property table ({count} rows)")
            cls_props, table_props = {}, {}
            for name in sorted(properties):
                cls_props[name], table_props[name] = _table_property(b, properties[name], count, name)
            b.use_extension("EXT_structural_metadata")
            b.gltf["extensions"] = {"EXT_structural_metadata": {
                "schema": {"id": f"cim_{class_name}", "classes": {class_name: {"properties": cls_props}}},
                "propertyTables": [{"class": class_name, "count": count, "properties": table_props}],
            }}
            feature["propertyTable"] = 0
        primitive["extensions"] = {"EXT_mesh_features": {"featureIds": [feature]}}
    elif properties:
        raise ValueError("properties need feature_ids")
    b.gltf["materials"] = [{"pbrMetallicRoughness": {"baseColorFactor": [float(c) for c in color],
                                                     "metallicFactor": 0.0, "roughnessFactor": 0.9},
                            "doubleSided": bool(double_sided)}]
    placement = np.eye(4)
    placement[:3, 3] = centre
    b.gltf["meshes"] = [{"primitives": [primitive]}]
    b.gltf["nodes"] = [{"mesh": 0, "matrix": column_major(Y_UP_FROM_Z_UP @ placement)}]
    b.gltf["scenes"] = [{"nodes": [0]}]
    b.gltf["scene"] = 0
    return b.to_glb()


# -- reading (tests, checks) ----------------------------------------------------------------------------------

def read_glb(data: bytes) -> tuple[dict, bytes]:
    """(glTF JSON, binary chunk) of a GLB; raises ValueError on a malformed file."""
    if len(data) < 20:
        raise ValueError("not a GLB: too short")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2 or length != len(data):
        raise ValueError("not a GLB 2.0 file")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != _JSON_CHUNK:
        raise ValueError("GLB: first chunk is not JSON")
    gltf = json.loads(data[20:20 + jlen])
    binary = b""
    off = 20 + jlen
    if off < len(data):
        blen, btype = struct.unpack_from("<II", data, off)
        if btype != _BIN_CHUNK:
            raise ValueError("GLB: second chunk is not BIN")
        binary = data[off + 8: off + 8 + blen]
    return gltf, binary


def accessor_array(gltf: dict, binary: bytes | list[bytes], index: int) -> np.ndarray:
    """The (count, k) values of accessor ``index`` (raw stored values; no normalisation applied).

    ``binary``: the GLB binary chunk, or every buffer's contents (:func:`glb_buffers`)."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    if isinstance(binary, list):
        binary = binary[view.get("buffer", 0)]
    dtype = _DTYPES[acc["componentType"]]
    k = _NCOMP[acc["type"]]
    count = acc["count"]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", dtype.itemsize * k)
    raw = np.frombuffer(binary, np.uint8, count=stride * (count - 1) + dtype.itemsize * k if count else 0,
                        offset=start)
    if stride == dtype.itemsize * k:
        return raw.view(dtype).reshape(count, k)
    padded = np.zeros(stride * count, np.uint8)
    padded[: len(raw)] = raw
    return padded.reshape(count, stride)[:, : dtype.itemsize * k].copy().view(dtype).reshape(count, k)


def node_matrix(gltf: dict, node: int = 0) -> np.ndarray:
    """Row-major 4x4 matrix of a glTF node (identity when it has none)."""
    m = gltf["nodes"][node].get("matrix")
    return np.eye(4) if m is None else np.asarray(m, float).reshape(4, 4).T


def decode_points(data: bytes) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Local ENU positions (n,3) float64, raw vertex attributes by name and the glTF JSON of a point GLB."""
    gltf, binary = read_glb(data)
    buffers = glb_buffers(gltf, binary)
    prim = gltf["meshes"][0]["primitives"][0]
    attrs = {name: accessor_array(gltf, buffers, i) for name, i in prim["attributes"].items()}
    m = np.linalg.inv(Y_UP_FROM_Z_UP) @ node_matrix(gltf)
    q = attrs["POSITION"].astype(float)
    acc = gltf["accessors"][prim["attributes"]["POSITION"]]
    if acc.get("normalized"):
        q /= float(np.iinfo(_DTYPES[acc["componentType"]]).max)
    return apply_affine(m, q), attrs, gltf
