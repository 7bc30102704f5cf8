"""Multi-resolution cube tiles in the Marzipano layout: ``{z}/{f}/{y}/{x}.jpg`` plus ``preview.jpg``.

Level ``z = 0`` is the 256-px fallback served from ``preview.jpg`` (six faces stacked vertically in Marzipano's
default preview order ``b d f l r u``); levels ``z = 1..`` hold ``tile_size`` tiles of faces of ``tile_size * 2^(z-1)``
pixels up to the top face size. ``marzipano.json`` lists the levels as Marzipano's ``CubeGeometry`` wants them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from cim.fileutil import atomic_dir
from cim.panoramas.projection import cube_faces

__all__ = ["PREVIEW_ORDER", "default_face_size", "encode_jpeg", "level_sizes", "write_marzipano"]

PREVIEW_ORDER = "bdflru"
PREVIEW_SIZE = 256


def default_face_size(width: int, tile_size: int = 512) -> int:
    """Largest ``tile_size * 2^k`` not above the equirectangular resolution at the face centre (W / π)."""
    size = tile_size
    while size * 2 <= width / np.pi:
        size *= 2
    return size


def level_sizes(face_size: int, tile_size: int = 512) -> list[int]:
    """Face sizes of levels 1.. (``tile_size`` up to ``face_size``, doubling)."""
    if face_size % tile_size or face_size < tile_size or (face_size // tile_size) & (face_size // tile_size - 1):
        raise ValueError(f"face size {face_size} must be tile size {tile_size} times a power of two")
    sizes, s = [], tile_size
    while s <= face_size:
        sizes.append(s)
        s *= 2
    return sizes


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR image (OpenCV's libjpeg-turbo)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def write_marzipano(
    image: np.ndarray,
    out_dir: str | Path,
    *,
    face_size: int | None = None,
    tile_size: int = 512,
    quality: int = 85,
    yaw_shift_deg: float = 0.0,
    metadata: dict | None = None,
) -> dict:
    """Write the Marzipano tile pyramid of an equirectangular BGR image into ``out_dir`` (atomically replaced).

    ``yaw_shift_deg`` (e.g. the panorama's grid heading) makes face ``f`` and yaw 0 look at grid north.
    Returns the written ``marzipano.json`` content.
    """
    out_dir = Path(out_dir)
    h, w = image.shape[:2]
    face_size = face_size or default_face_size(w, tile_size)
    sizes = level_sizes(face_size, tile_size)
    faces = cube_faces(image, face_size, yaw_shift_deg=yaw_shift_deg)
    levels: list[dict] = [{"tileSize": PREVIEW_SIZE, "size": PREVIEW_SIZE, "fallbackOnly": True}]
    with atomic_dir(out_dir) as tmp:
        pyramid = {f: img for f, img in faces.items()}
        for z in range(len(sizes), 0, -1):
            size = sizes[z - 1]
            if size != face_size:
                pyramid = {f: cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for f, img in pyramid.items()}
            n = size // tile_size
            for f, img in pyramid.items():
                for y in range(n):
                    row = tmp / str(z) / f / str(y)
                    row.mkdir(parents=True, exist_ok=True)
                    for x in range(n):
                        tile = img[y * tile_size:(y + 1) * tile_size, x * tile_size:(x + 1) * tile_size]
                        (row / f"{x}.jpg").write_bytes(encode_jpeg(tile, quality))
        levels += [{"tileSize": tile_size, "size": s} for s in sizes]
        preview = np.concatenate([
            cv2.resize(pyramid[f], (PREVIEW_SIZE, PREVIEW_SIZE), interpolation=cv2.INTER_AREA) for f in PREVIEW_ORDER
        ])
        (tmp / "preview.jpg").write_bytes(encode_jpeg(preview, quality))
        config = {
            "faceSize": face_size,
            "levels": levels,
            "tileUrl": "{z}/{f}/{y}/{x}.jpg",
            "previewUrl": "preview.jpg",
            "cubeMapPreviewFaceOrder": PREVIEW_ORDER,
            "initialViewParameters": {"yaw": 0.0, "pitch": 0.0, "fov": float(np.pi / 2)},
            "yawZero": "grid north" if yaw_shift_deg else "panorama centre (camera forward)",
            **(metadata or {}),
        }
        (tmp / "marzipano.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return config
