"""Object classification: buildings (6), vegetation (3 / 4 / 5) and other (1) from height above ground and local
geometry, for clouds that come without those classes.

1. Height above ground (HAG) from a DTM of the ground points (:func:`cim.terrain.dtm.dtm_grid`).
2. Local shape per point from its ``k`` nearest neighbours (3D): eigenvalues l1 >= l2 >= l3 of the covariance
   give planarity (l2 - l3) / l1 and scatter l3 / l1. Roofs and walls are planar with little scatter;
   vegetation scatters (and, with multi-return data, returns early pulses).
3. Buildings are regions, not points: planar points above ``min_height`` are gathered on a ``cell`` grid; the
   8-connected cell components of at least ``min_area`` m2 with a majority of planar points are buildings, and
   all their points above ``min_height`` become class 6 (chimneys and roof edges included).
4. Remaining points above ground: scattering ones are vegetation by height (3 up to 0.5 m, 4 up to 2 m, 5 above),
   the rest "other" (1): cars, poles, street furniture.

Noise (7, 18) and ground (2) are kept as given.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from cim.terrain.dtm import dtm_grid, height_above_ground
from cim.terrain.grid import GridSpec, cell_reduce, finite_points
from cim.terrain.params import ObjectParams
from cim.threads import task_threads

__all__ = ["ObjectParams", "local_shape", "classify_objects"]

UNCLASSIFIED, GROUND, LOW_VEG, MED_VEG, HIGH_VEG, BUILDING = 1, 2, 3, 4, 5, 6
_NOISE = (7, 18)


def local_shape(xyz: np.ndarray, k: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(planarity, scatter, |normal z|) per point from its k nearest neighbours (3D)."""
    n = len(xyz)
    if n < 3:
        z = np.zeros(n)
        return z, np.ones(n), z
    pts = xyz - xyz.min(axis=0)
    k = min(k, n)
    _, nb = cKDTree(pts).query(pts, k=k, workers=task_threads())
    nbr = pts[nb]  # (n, k, 3)
    centred = nbr - nbr.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", centred, centred) / k
    evals, evecs = np.linalg.eigh(cov)  # ascending
    l3, l2, l1 = evals[:, 0], evals[:, 1], evals[:, 2]
    l1 = np.maximum(l1, 1e-12)
    planarity = (l2 - l3) / l1
    scatter = np.maximum(l3, 0) / l1
    normal_z = np.abs(evecs[:, 2, 0])
    return planarity, scatter, normal_z


def classify_objects(
    pc,
    ground: np.ndarray | None = None,
    params: ObjectParams | None = None,
    dtm: tuple[np.ndarray, GridSpec] | None = None,
) -> np.ndarray:
    """New ASPRS classification (uint8) for every point of ``pc``.

    ``ground`` defaults to class 2 of the cloud; ``dtm`` = (values, grid) reuses a DTM instead of building one.
    """
    p = params or ObjectParams()
    n = len(pc)
    x, y, z, finite = finite_points(pc.x, pc.y, pc.z)
    cls_in = np.asarray(pc["classification"]) if pc.has("classification") else np.zeros(n, np.uint8)
    if ground is None:
        ground = cls_in == GROUND
    noise = np.isin(cls_in, _NOISE)
    out = np.full(n, UNCLASSIFIED, dtype=np.uint8)
    out[ground & ~noise] = GROUND
    out[noise] = cls_in[noise]
    if not ground.any():
        return out
    if dtm is None:
        grid = GridSpec.from_points(x[finite], y[finite], p.dtm_cell)
        dtm = (dtm_grid(np.column_stack([x, y, z])[ground & finite], grid), grid)
    hag = height_above_ground(x, y, z, dtm[0], dtm[1])
    above = finite & ~ground & ~noise & np.isfinite(hag) & (hag > 0.2)
    sel = np.flatnonzero(above)
    if len(sel) == 0:
        return out
    planarity, scatter, _ = local_shape(np.column_stack([x[sel], y[sel], z[sel]]), p.k)
    planar = (planarity >= p.planarity) & (scatter <= p.scatter)
    tall = hag[sel] >= p.min_height

    # building regions on a cell grid
    bgrid = GridSpec.from_points(x[sel], y[sel], p.cell)
    idx = bgrid.flat_index(x[sel], y[sel])
    ncell = bgrid.width * bgrid.height
    tall_idx = np.where(tall, idx, -1)
    n_tall = cell_reduce(tall_idx, None, ncell, "count")
    n_planar = cell_reduce(np.where(tall & planar, idx, -1), None, ncell, "count")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_tall > 0, n_planar / np.maximum(n_tall, 1), 0.0)
    cand = (share >= p.planar_share).reshape(bgrid.shape)
    cand = ndimage.binary_closing(cand, structure=np.ones((3, 3), bool)) & (n_tall > 0).reshape(bgrid.shape)
    labels, nlab = ndimage.label(cand, structure=np.ones((3, 3), bool))
    if nlab:
        areas = np.bincount(labels.ravel(), minlength=nlab + 1) * p.cell**2
        keep = areas >= p.min_area
        keep[0] = False
        building_cell = keep[labels].ravel()
        is_building = tall & (idx >= 0) & building_cell[np.maximum(idx, 0)]
    else:
        is_building = np.zeros(len(sel), dtype=bool)

    h = hag[sel]
    veg = ~is_building & ~planar
    cls = np.full(len(sel), UNCLASSIFIED, dtype=np.uint8)
    cls[is_building] = BUILDING
    cls[veg & (h <= p.low_veg)] = LOW_VEG
    cls[veg & (h > p.low_veg) & (h <= p.medium_veg)] = MED_VEG
    cls[veg & (h > p.medium_veg)] = HIGH_VEG
    if pc.has("return_number") and pc.has("number_of_returns"):
        early = np.asarray(pc["return_number"])[sel] < np.asarray(pc["number_of_returns"])[sel]
        # early returns that are not in a building region are vegetation whatever their shape
        cls[early & ~is_building & (h > p.medium_veg)] = HIGH_VEG
    out[sel] = cls
    return out
