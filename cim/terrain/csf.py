"""Second ground backend: the cloth simulation filter (Zhang et al. 2016) of the ``cloth-simulation-filter``
package, for comparison with SMRF. Defaults are the package's / PDAL's (resolution 1.0, rigidness 3, ...)."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from cim.extras import require
from cim.terrain.grid import finite_points

__all__ = ["csf_ground"]


def csf_ground(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    candidates: np.ndarray | None = None,
    *,
    resolution: float = 1.0,
    rigidness: int = 3,
    threshold: float = 0.5,
    time_step: float = 0.65,
    iterations: int = 500,
    slope_smooth: bool = True,
    unit: float = 1.0,
) -> np.ndarray:
    """Ground mask by CSF (lengths in metres, ``unit`` metres per coordinate unit)."""
    CSF = require("CSF", "csf", "the csf ground backend")
    x, y, z, cand = finite_points(x, y, z, candidates)
    out = np.zeros(len(x), dtype=bool)
    sel = np.flatnonzero(cand)
    if len(sel) < 3:
        return out
    origin = np.array([x[sel].min(), y[sel].min(), z[sel].min()])
    pts = np.column_stack([x[sel], y[sel], z[sel]]) - origin
    csf = CSF.CSF()
    csf.params.bSloopSmooth = bool(slope_smooth)
    csf.params.cloth_resolution = float(resolution / unit)
    csf.params.rigidness = int(rigidness)
    csf.params.class_threshold = float(threshold / unit)
    csf.params.time_step = float(time_step)
    csf.params.interations = int(iterations)
    csf.setPointCloud(pts)
    ground, other = CSF.VecInt(), CSF.VecInt()
    with _quiet():
        csf.do_filtering(ground, other, False)
    out[sel[np.asarray(ground, dtype=np.int64)]] = True
    return out


@contextlib.contextmanager
def _quiet():
    """CSF prints progress to stdout from C++; silence file descriptor 1 while it runs."""
    try:
        fd = os.dup(1)
    except OSError:
        yield
        return
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(fd, 1)
            os.close(fd)
