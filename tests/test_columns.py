"""Column files (cim.columns): the shuffle, and frames written by the zlib layout of earlier versions."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from cim.columns import _shuffle, _unshuffle, append_frame, read_frames


def test_shuffle_puts_byte_planes_in_order_and_unshuffle_inverts_it() -> None:
    values = np.array([0x04030201, 0x08070605, -1], "<i4")
    planes = _shuffle(values)
    assert planes.tobytes() == bytes([1, 5, 255, 2, 6, 255, 3, 7, 255, 4, 8, 255])
    assert _unshuffle(planes.tobytes(), np.dtype("<i4"), 3).tolist() == values.tolist()
    assert _shuffle(np.zeros(0, "<f8")).size == 0 and len(_unshuffle(b"", np.dtype("<f8"), 0)) == 0


def _legacy_frame(columns: dict[str, np.ndarray], meta: dict) -> bytes:
    """A frame in the layout cim wrote before Zstandard: raw columns, bytes transposed into planes, zlib 6."""
    n = len(next(iter(columns.values())))
    header = {"n": n, "meta": meta, "columns": []}
    blobs = []
    for name, values in columns.items():
        planes = values.view(np.uint8).reshape(n, values.dtype.itemsize).T
        blobs.append(zlib.compress(planes.tobytes(), 6))
        header["columns"].append([name, values.dtype.str, "raw", [], values.dtype.str, len(blobs[-1])])
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def test_frames_of_the_zlib_layout_still_read_beside_new_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    old = {"z": rng.normal(300, 20, 1000).astype("<f4"), "intensity": rng.integers(0, 4000, 1000).astype("<u2")}
    path = tmp_path / "t.cols"
    path.write_bytes(_legacy_frame(old, {"chunk": 0}))  # a resumed run finds parts of an earlier version
    new = {k: v[::-1].copy() for k, v in old.items()}
    append_frame(path, new, {"chunk": 1})
    frames = list(read_frames(path))
    assert [meta for meta, _ in frames] == [{"chunk": 0}, {"chunk": 1}]
    for (_, got), want in zip(frames, (old, new)):
        assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in want.items()}


def test_empty_columns_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "e.cols"
    append_frame(path, {"x": np.zeros(0), "cls": np.zeros(0, "u1")}, {"chunk": 0}, quanta={"x": (0.01, 0.0)})
    (meta, columns), = read_frames(path)
    assert meta == {"chunk": 0} and {k: (v.dtype.str, len(v)) for k, v in columns.items()} == {
        "x": ("<f8", 0), "cls": ("|u1", 0)}
