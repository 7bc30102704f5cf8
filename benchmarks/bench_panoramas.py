"""Per-panorama chain on an 8000x4000 mobile-mapping panorama: cim vs py360convert for the cube-face step.

Input: the real Amsterdam Ladybug5 panorama of ../shared/data (8000x4000 JPEG). Only timings are kept: every image
made here goes to a temporary folder that is deleted (the panorama shows unblurred people).

Steps timed (median of ``--repeat`` runs, grids warm as in a batch of same-size panoramas):
decode, anonymize (faces + plates on pinhole views of the band at 2048 and on equirectangular strips around the
horizon at 4096 and full resolution, blur), cube faces (cim cached remap vs
py360convert ``e2c`` with its own cached grids, same image, same face size), Marzipano tiles (faces + pyramid +
JPEG encoding), the anonymized equirectangular JPEG, and the whole chain.

    .venv/bin/python benchmarks/bench_panoramas.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from benchmarks.common import SHARED, write_result

IMAGE = SHARED / "panoramas" / "amsterdam" / "pano_0001_000529.jpg"
FACE = 2048


CPU: dict[str, list[float]] = {}


def _timed(fn, *args, _key: str | None = None, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    if _key:
        CPU.setdefault(_key, []).append(time.process_time() - cpu)
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> None:
    import py360convert

    from cim.panoramas.privacy import AnonymizeOptions, anonymize
    from cim.panoramas.projection import cube_faces
    from cim.panoramas.tiles import encode_jpeg, write_marzipano

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not IMAGE.is_file():
        raise SystemExit(f"{IMAGE} is missing (needs ../shared/data)")
    opts = AnonymizeOptions()
    # same-run reference: the previous default layout's band search (views of the whole band at 4096), plus the
    # full-resolution horizon strip
    reference = AnonymizeOptions(detect_width=4096, strips=((-6.0, 6.0, 8000),))
    first: dict[str, float] = {}
    image = cv2.imread(str(IMAGE))
    first["cim_cube_faces"], _ = _timed(cube_faces, image, FACE)
    first["py360convert_e2c"], _ = _timed(py360convert.e2c, image, FACE, cube_format="dict")
    first["anonymize"], _ = _timed(anonymize, image, opts)  # loads the ONNX model, builds the view grids
    first["anonymize_reference"], _ = _timed(anonymize, image, reference)
    runs: dict[str, list[float]] = {k: [] for k in ("decode", "anonymize", "anonymize_reference", "cim_cube_faces",
                                                   "py360convert_e2c", "tiles", "equirect_jpeg", "chain")}
    faces = regions = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            t_decode, image = _timed(cv2.imread, str(IMAGE), _key="decode")
            t_anon, (clean, found) = _timed(anonymize, image, opts, _key="anonymize")
            t_jpeg, _ = _timed(encode_jpeg, clean, 90, _key="equirect_jpeg")
            t_tiles, _ = _timed(write_marzipano, clean, Path(tmp) / "tiles", face_size=FACE, yaw_shift_deg=122.1,
                                _key="tiles")
            runs["decode"].append(t_decode)
            runs["anonymize"].append(t_anon)
            runs["equirect_jpeg"].append(t_jpeg)
            runs["tiles"].append(t_tiles)
            runs["chain"].append(t_decode + t_anon + t_jpeg + t_tiles)
            runs["anonymize_reference"].append(_timed(anonymize, image, reference, _key="anonymize_reference")[0])
            runs["cim_cube_faces"].append(_timed(cube_faces, image, FACE, _key="cim_cube_faces")[0])
            runs["py360convert_e2c"].append(_timed(py360convert.e2c, image, FACE, cube_format="dict",
                                                   _key="py360convert_e2c")[0])
            regions = len(found)
            faces = sum(r.kind == "face" for r in found)
    median = {k: round(statistics.median(v), 3) for k, v in runs.items()}
    chain_cpu = sum(statistics.median(CPU[k]) for k in ("decode", "anonymize", "equirect_jpeg", "tiles"))
    result = {
        "input": {"image": "shared/data/panoramas/amsterdam/pano_0001_000529.jpg", "size": [8000, 4000],
                  "face_size": FACE, "detect_width": opts.detect_width, "views": opts.views,
                  "band_deg": list(opts.band), "strips": [list(x) for x in opts.strips]},
        "repeat": args.repeat,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "seconds_median": median,
        "cpu_seconds_median": {k: round(statistics.median(v), 3) for k, v in CPU.items()},
        "chain_cpu_seconds": round(chain_cpu, 3),
        "seconds_first_call": {k: round(v, 3) for k, v in first.items()},
        "cube_faces_speedup_vs_py360convert": round(median["py360convert_e2c"] / median["cim_cube_faces"], 2),
        "anonymize_cpu_speedup_vs_reference": round(statistics.median(CPU["anonymize_reference"])
                                                    / statistics.median(CPU["anonymize"]), 2),
        "reference": "views of the whole band at 4096 + the ±6° strip at 8000 (the previous default's first pass)",
        "chain_target_seconds": 5.0,
        "chain_within_target_wall": median["chain"] <= 5.0,
        "chain_within_target_cpu": chain_cpu <= 5.0,
        "detections": {"regions": regions, "faces": faces},
        "note": "2-core VM shared with other jobs while measuring (see load_average): wall seconds are inflated; "
                "cpu seconds (all threads of this process) bound the unloaded 2-core wall time from above. anonymize = views + "
                "strips + CenterFace (onnxruntime CPU) + plate cascade + blur; tiles = cube faces + 3 levels + preview "
                "+ JPEG encoding of 127 files.",
    }
    write_result("panoramas", result)


if __name__ == "__main__":
    main()
