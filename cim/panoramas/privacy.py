"""Anonymization of equirectangular panoramas: find faces and number plates, pixelate and blur them for good.

Detectors never see strongly distorted imagery. The useful elevation band (default −45°..+25°, where people and
cars are) is re-projected into overlapping pinhole views at a modest resolution, where near (large) faces and
plates look as they do in ordinary photos; middle-distance and distant faces, which are small and always close to
the horizon, are searched directly in thin equirectangular strips around it at higher resolutions (within ±16°
of the horizon the equirectangular image is stretched by at most 4 %, so no re-projection is needed):

* faces: CenterFace (MIT, WIDER FACE) from the ONNX file shipped in ``cim/data/models``, run with
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
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class AnonymizeOptions:
    """Detection and blurring settings (defaults tuned on 8000x4000 mobile-mapping panoramas)."""

    detect_width: int = 2048  # equirectangular width the views are rendered at (focal = detect_width / 2π)
    band: tuple[float, float] = (-45.0, 25.0)  # elevation band the views cover, degrees
    #: equirectangular strips (lowest, highest elevation in degrees, width searched at; capped at the image's
    #: width) searched again for smaller faces: middle distances at 4096, distant pedestrians at full resolution
    strips: tuple[tuple[float, float, int], ...] = ((-16.0, 10.0, 4096), (-6.0, 6.0, 8000))
    plate_max_width: int = 4096  # plates are searched in the views and the strips up to this width
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
    """The CenterFace ONNX model shipped with cim (``cim/data/models``, MIT; see its README there)."""
    path = Path(__file__).resolve().parents[1] / "data" / "models" / "centerface.onnx"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall cim (the face model is package data)")
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


def _centerface(views: list[np.ndarray], threshold: float, threads: int
                ) -> list[list[tuple[float, float, float, float, float]]]:
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
    """Plate boxes in the bottom ``rows`` rows of a view: plates sit below the camera, never above the horizon."""
    if rows <= 0:
        return []
    offset = view.shape[0] - rows
    gray = cv2.equalizeHist(cv2.cvtColor(view[offset:], cv2.COLOR_BGR2GRAY))
    found = _plate_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(24, 8))
    return [(float(x), float(y + offset), float(x + w), float(y + offset + h), 1.0)
            for x, y, w, h in np.reshape(found, (-1, 4))]


# --- views and regions -------------------------------------------------------------------------------------------

def _view_layout(opts: AnonymizeOptions, detect_width: int) -> tuple[list[float], float, float, int, int]:
    """Yaws, pitch, focal length and size of the pinhole views of ``opts.band`` rendered at ``detect_width``."""
    lo, hi = opts.band
    focal = detect_width / (2.0 * np.pi)
    hfov = 360.0 / opts.views + opts.overlap_deg
    pitch = (lo + hi) / 2.0
    vfov = hi - lo
    width = int(np.ceil(2 * focal * np.tan(np.radians(hfov / 2)) / 32.0) * 32)
    height = int(np.ceil(2 * focal * np.tan(np.radians(vfov / 2)) / 32.0) * 32)
    yaws = [180.0 - k * 360.0 / opts.views for k in range(opts.views)]
    return yaws, pitch, focal, width, height


def _region(kind: str, score: float, u: FloatArray, v: FloatArray, width: int, height: int) -> Region:
    """The region bounding equirectangular outline points ``(u, v)`` (continuous pixels; a seam-straddling
    outline is unrolled so that ``x1`` may pass the width)."""
    u = np.mod(u, width)
    if u.max() - u.min() > width / 2:  # the box straddles the image seam
        u = np.where(u < width / 2, u + width, u)
    cu, cv_ = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    az = 360.0 * (0.5 - (cu % width) / width)
    el = 180.0 * (0.5 - cv_ / height)
    return Region(kind, round(float(score), 4), int(np.floor(u.min())), max(0, int(np.floor(v.min()))),
                  int(np.ceil(u.max())), min(height, int(np.ceil(v.max()))), round(float(az), 3), round(float(el), 3))


def _outline(box, margin: float) -> tuple[FloatArray, FloatArray]:
    """36 points around a detector box ``(x0, y0, x1, y1, score)`` grown by ``margin`` of its size per side."""
    x0, y0, x1, y1, _ = box
    bw, bh = x1 - x0, y1 - y0
    x0, x1, y0, y1 = x0 - margin * bw, x1 + margin * bw, y0 - margin * bh, y1 + margin * bh
    t = np.linspace(0.0, 1.0, 9)
    px = np.concatenate([x0 + t * (x1 - x0), np.full(9, x1), x1 - t * (x1 - x0), np.full(9, x0)])
    py = np.concatenate([np.full(9, y0), y0 + t * (y1 - y0), np.full(9, y1), y1 - t * (y1 - y0)])
    return px, py


def detect(image: np.ndarray, opts: AnonymizeOptions = AnonymizeOptions()) -> list[Region]:
    """Faces and plates in an equirectangular BGR image, as equirectangular regions (margins included).

    The whole band is searched in pinhole views at ``detect_width``; the ``strips`` around the horizon, where the
    smaller faces of people farther away are, are searched again at their own (higher) resolutions.
    """
    width = image.shape[1]
    detect_width = min(opts.detect_width, width)
    # a strip no finer than the views adds nothing (small images: every search is capped at the image width)
    strips = [(lo, hi, min(int(w), width)) for lo, hi, w in opts.strips if min(int(w), width) > detect_width]
    sizes = _pyramid(image, [detect_width] + [w for _, _, w in strips])
    regions = _detect_views(sizes[detect_width], width, opts,
                            plates=opts.plates and detect_width <= opts.plate_max_width)
    for lo, hi, strip_width in strips:
        regions += _detect_strip(sizes[strip_width], width, opts, (lo, hi),
                                 plates=opts.plates and strip_width <= opts.plate_max_width)
    return _merge_duplicates(regions)


def _pyramid(image: np.ndarray, widths: list[int]) -> dict[int, np.ndarray]:
    """The equirectangular image at each of ``widths`` (area-averaged), each made from the smallest larger one."""
    out = {image.shape[1]: image}
    for w in sorted(set(widths) - set(out), reverse=True):
        source = out[min(k for k in out if k > w)]
        out[w] = cv2.resize(source, (w, w // 2), interpolation=cv2.INTER_AREA)
    return out


def _detect_views(small: np.ndarray, width: int, opts: AnonymizeOptions, plates: bool) -> list[Region]:
    """Faces (and plates) in the pinhole views of the band, rendered from ``small`` (the image resized), as
    regions of the image of ``width``."""
    height = width // 2
    yaws, pitch, focal, vw, vh = _view_layout(opts, small.shape[1])
    views = [perspective_view(small, yaw, pitch, focal, vw, vh) for yaw in yaws]
    # view rows below the horizon (plus a margin): the centre row looks at `pitch`, rows go down by atan(dy / f)
    horizon_row = vh / 2.0 - focal * np.tan(np.radians(-pitch))
    plate_rows = int(min(vh, vh - horizon_row + 0.05 * vh)) if plates else 0
    regions: list[Region] = []
    for yaw, view, boxes in zip(yaws, views, _centerface(views, opts.face_threshold, opts.threads)):
        found = [("face", b) for b in boxes] + [("plate", b) for b in _plates(view, opts.plate_min_neighbors,
                                                                               plate_rows)]
        for kind, box in found:
            u, v = view_pixels_to_equirect(*_outline(box, opts.margin), yaw, pitch, focal, vw, vh, width, height)
            regions.append(_region(kind, box[4], u, v, width, height))
    return regions


def _detect_strip(small: np.ndarray, width: int, opts: AnonymizeOptions, band: tuple[float, float],
                  plates: bool) -> list[Region]:
    """Faces (and plates below the horizon) in the strip of ``band`` of ``small`` (the image resized), searched
    directly (padded across the seam so a face there is whole once), as regions of the image of ``width``."""
    height = width // 2
    sh, strip_width = small.shape[:2]
    r0 = int(np.floor((0.5 - band[1] / 180.0) * sh))
    r1 = int(np.ceil((0.5 - band[0] / 180.0) * sh))
    rows = -(-(r1 - r0) // 32) * 32  # the detector wants multiples of 32
    r0 = int(np.clip((r0 + r1 - rows) // 2, 0, max(0, sh - rows)))
    pad = 64 + (-strip_width % 32) // 2
    cols = np.arange(-pad, strip_width + pad + (-(strip_width + 2 * pad) % 32)) % strip_width
    strip = small[r0:r0 + rows][:, cols]
    below = max(0, r0 + rows - sh // 2) if plates else 0
    boxes = [("face", b) for b in _centerface([strip], opts.face_threshold, opts.threads)[0]]
    boxes += [("plate", b) for b in _plates(strip, opts.plate_min_neighbors, min(rows, below + rows // 20))]
    scale = width / strip_width
    regions = []
    for kind, box in boxes:
        px, py = _outline(box, opts.margin)
        regions.append(_region(kind, box[4], (px - pad) * scale, (py + r0) * scale, width, height))
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
        "detectors": {"face": "CenterFace (ONNX)", "plate": f"OpenCV {PLATE_CASCADE}"
                      if opts.plates else None},
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(asdict(opts).items())},
        "method": "pixelate (about 6 blocks across) + Gaussian blur",
        "counts": counts,
        "regions": [asdict(r) for r in regions],
    }


def write_report(path: str | Path, doc: dict) -> None:
    from cim.fileutil import write_text_atomic

    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
