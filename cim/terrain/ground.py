"""Ground classification: a grid-based Simple Morphological Filter (SMRF, Pingel et al. 2013), vectorised.

Steps (all on one global, cell-aligned grid, so a tile with a buffer gets the same answer as the merged cloud):

1. minimum surface: lowest candidate point per cell; empty cells filled linearly (TIN of the gap rims) where the
   TIN's edges are at most ``max_edge`` long, from the nearest cell elsewhere (wide gaps, the data's outside).
2. progressive opening with octagonal windows of radius 1 .. ``window`` / ``cell`` cells; a cell becomes
   "object" when an opening lowers it by more than ``slope * radius * cell`` against the previous opening.
3. provisional bare earth: the minimum surface without object cells, gaps filled linearly again.
4. each point is ground when ``|z - dem(x, y)| <= threshold + scalar * gradient(x, y)`` (bilinear dem; gradient
   = the DEM's slope averaged over a ``slope_window`` square, so one bump does not widen its own tolerance).
5. ``refine`` times: the DEM is rebuilt from the lowest accepted ground point per cell, its height moved to the
   cell centre along the previous DEM's slope (gaps filled linearly), and step 4 repeated, so terrain the openings
   cut (embankments, terrace edges, banks) comes back where ground points were accepted next to it, while object
   cells without accepted ground stay out.

Parameters (defaults work for urban ALS and MLS; see docs/terrain.md):

* ``cell`` (m): grid cell; ~ the ground point spacing, 1.0 for ALS; MLS gets 0.5 automatically from density.
* ``slope`` (rise/run): the steepest terrain that is still ground (0.15 = 8.5 deg per cell step).
* ``window`` (m): largest object radius that is removed; must exceed half the width of the largest building.
* ``threshold`` (m) and ``scalar`` (m per unit slope): the final point-to-surface tolerance.
* ``slope_window`` (m): side of the square over which the DEM slope for that tolerance is averaged.
* ``max_edge`` (m): longest TIN edge when filling the minimum surface; a TIN over a wide gap or across the concave
  outside of the data slopes towards heights far away and turns terrain at the data edge into a ridge.
* ``refine``: DEM rebuilds from the accepted ground (step 5); 0 is plain SMRF.

Candidates are the last/only returns that are not noise (7, 18) or withheld; the returned mask covers every
point, so first returns on bare ground that lie on the surface are ground too.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cim.crs import linear_unit_factor
from cim.terrain.fill import fill_small_gaps, nearest_fill, tin_fill
from cim.terrain.grid import GridSpec, cell_reduce, finite_points
from cim.terrain.morphology import progressive_openings
from cim.terrain.outliers import low_noise
from cim.terrain.params import NOISE_CLASSES, SmrfParams

__all__ = ["SmrfParams", "smrf", "classify_ground", "ground_mask", "ground_candidates", "NOISE_CLASSES"]


def smrf(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    candidates: np.ndarray | None = None,
    params: SmrfParams | None = None,
    return_surface: bool = False,
):
    """Ground mask (bool, one per point) by SMRF; points with non-finite coordinates are never ground.

    ``candidates`` (bool) restricts which points build the minimum surface (default: all finite points).
    With ``return_surface`` also returns (grid, provisional DEM) for inspection.
    """
    p = (params or SmrfParams()).validate()
    x, y, z, finite = finite_points(x, y, z)
    cand = finite if candidates is None else (np.asarray(candidates, dtype=bool) & finite)
    ground = np.zeros(len(x), dtype=bool)
    if cand.sum() < 3:
        return (ground, None, None) if return_surface else ground

    grid = GridSpec.from_points(x[finite], y[finite], p.cell)
    idx = grid.flat_index(x, y)
    cidx = np.where(cand, idx, -1)
    zmin = cell_reduce(cidx, z, grid.width * grid.height, "min").reshape(grid.shape)
    has_points = np.isfinite(zmin)
    surface = _fill(grid, zmin, has_points, p.max_edge)

    objects = np.zeros(grid.shape, dtype=bool)
    last = surface
    max_radius = max(1, int(round(p.window / p.cell)))
    for r, opened in progressive_openings(surface, max_radius):
        objects |= (last - opened) > p.slope * r * p.cell
        last = opened

    bare = has_points & ~objects
    if not bare.any():
        return (ground, grid, None) if return_surface else ground
    dem = _fill(grid, np.where(bare, zmin, np.nan), bare)

    ok = finite & (idx >= 0)
    rows = (grid.ymax - y[ok]) / p.cell - 0.5  # map_coordinates indexes cells by their centres
    cols = (x[ok] - grid.xmin) / p.cell - 0.5
    flat, zok, cand_ok = idx[ok], z[ok], cand[ok]
    ground[ok] = _near_surface(dem, p, rows, cols, flat, zok)
    for _ in range(int(p.refine)):
        if not ground.any():
            break
        zc = _at_cell_centres(dem, p, rows, cols, flat, zok)
        zground = cell_reduce(np.where(ground[ok] & cand_ok, flat, -1), zc, grid.width * grid.height, "min")
        zground = zground.reshape(grid.shape)
        dem = _fill(grid, zground, np.isfinite(zground))
        ground[ok] = _near_surface(dem, p, rows, cols, flat, zok)
    return (ground, grid, dem) if return_surface else ground


def _near_surface(
    dem: np.ndarray, p: SmrfParams, rows: np.ndarray, cols: np.ndarray, flat: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """``|z - dem| <= threshold + scalar * gradient`` at fractional cell positions (bilinear DEM; gradient = the
    cell slopes averaged over an odd square of about ``slope_window``)."""
    gy, gx = np.gradient(dem, p.cell)
    size = 2 * int(round(p.slope_window / (2 * p.cell))) + 1
    gradient = ndimage.uniform_filter(np.hypot(gx, gy), size, mode="nearest").ravel()[flat]
    dem_at = ndimage.map_coordinates(dem, [rows, cols], order=1, mode="nearest")
    return np.abs(z - dem_at) <= p.threshold + p.scalar * gradient


def _at_cell_centres(
    dem: np.ndarray, p: SmrfParams, rows: np.ndarray, cols: np.ndarray, flat: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Point heights moved along the DEM slope to their cell centres: on a slope the lowest point of a cell lies on
    its downhill side, and taken as the centre's height it would bias the rebuilt DEM low."""
    gy, gx = np.gradient(dem, p.cell)
    offset = gy.ravel()[flat] * (rows - np.round(rows)) + gx.ravel()[flat] * (cols - np.round(cols))
    return z - offset * p.cell


def _fill(grid: GridSpec, values: np.ndarray, valid: np.ndarray, max_edge: float | None = None) -> np.ndarray:
    """Small gaps from their neighbours, larger ones linearly on a TIN (edges up to ``max_edge``), the rest nearest."""
    values, valid = fill_small_gaps(values, valid)
    filled = tin_fill(grid, values, valid, max_edge=max_edge)
    return nearest_fill(filled)


def ground_candidates(pc) -> np.ndarray:
    """Points allowed to shape the ground surface: last/only returns, not noise, not withheld."""
    n = len(pc)
    cand = np.ones(n, dtype=bool)
    if pc.has("return_number") and pc.has("number_of_returns"):
        rn = np.asarray(pc["return_number"])
        nr = np.asarray(pc["number_of_returns"])
        meaningful = nr > 0
        cand &= ~meaningful | (rn >= nr)
    if pc.has("classification"):
        cand &= ~np.isin(np.asarray(pc["classification"]), NOISE_CLASSES)
    if pc.has("withheld"):
        cand &= ~np.asarray(pc["withheld"], dtype=bool)
    return cand


def classify_ground(pc, backend: str = "smrf", **params) -> np.ndarray:
    """Bool ground mask for a PointCloud (all points; buffer points included as context).

    ``backend`` is "smrf" (default; parameters of :class:`SmrfParams`) or "csf" (the cloth-simulation-filter
    package; parameters of :func:`cim.terrain.csf.csf_ground`).
    """
    cand = ground_candidates(pc)
    unit = linear_unit_factor(pc.crs) if getattr(pc, "crs", None) is not None else 1.0
    ground = ground_mask(
        np.asarray(pc.x), np.asarray(pc.y), np.asarray(pc.z), cand, backend=backend, unit=unit, **params
    )
    if pc.has("classification"):
        ground &= ~np.isin(np.asarray(pc["classification"]), NOISE_CLASSES)
    return ground


def ground_mask(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    candidates: np.ndarray | None = None,
    *,
    backend: str = "smrf",
    remove_low_noise: bool = True,
    unit: float = 1.0,
    **params,
) -> np.ndarray:
    """Bool ground mask for coordinate arrays: low noise removed first (see :func:`cim.terrain.outliers.low_noise`),
    then the chosen backend on the remaining ``candidates``.

    Parameters are in metres; ``unit`` is metres per coordinate unit (0.3048 for a CRS in international feet).
    """
    x, y, z, cand = finite_points(x, y, z, candidates)
    low = np.zeros(len(x), dtype=bool)
    if remove_low_noise:
        low = low_noise(x, y, z, candidates=cand, unit=unit)
        cand &= ~low
    if backend == "smrf":
        ground = smrf(x, y, z, candidates=cand, params=SmrfParams(**params).in_units(unit))
    elif backend == "csf":
        from cim.terrain.csf import csf_ground

        ground = csf_ground(x, y, z, candidates=cand, unit=unit, **params)
    else:
        raise ValueError(f"unknown ground backend {backend!r} (use 'smrf' or 'csf')")
    return ground & ~low
