"""Model-driven roof fits: the standard German roof shapes (flat, shed, gable, hip, half-hip, mansard, pyramid) on
the main axes of a footprint, fitted robustly to the roof points and scored with a penalised error (BIC-like),
so that the data-driven model only wins where the points demand more planes.

Every standard roof is the lower envelope of a few planes (z = min over planes) in the footprint's frame
(u along one side of its minimum rotated rectangle, v across, origin at its centre):

* flat ``h``; shed ``h - s·v``; gable ``h - s·|v|``;
* hip / half-hip ``h - s·max(|v|, r·(|u| - d))``: the end planes are ``r`` times as steep and start ``d`` from the
  centre; they reach the eaves (hip) when ``r·(A - d) ≥ B`` (half sizes A, B), else they stop above them
  (half-hip, Krüppelwalm);
* pyramid ``h - s·max(|v|, (B/A)·|u|)`` (a tower roof when steeper than 60°); mansard
  ``h - s₁·|v| - s₂·max(|v| - w, 0)``;
* barrel ``h - s·(R - √(R² - v²))`` (arc radius ``R`` over a grid), built as 16 planes tangent to the arc.

The score of a fit is ``Σ min(r²/σ², 9) + k·ln n`` (residuals truncated at 3σ so chimneys, dormers and rounded
eaves do not decide; ``k`` parameters; σ the noise estimated from the data). Image-matching clouds round the
outline and the break lines over a width that :func:`rounding_width` estimates from the points: a fit counts only
when each of its planes owns points outside that width (:func:`resolved`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import Polygon

from cim.buildings.planes import local_residual_sd
from cim.buildings.rooftype import BARREL, FLAT, GABLE, HALF_HIP, HIP, MANSARD, PYRAMID, SHED, spire_type

TRUNCATE = 3.0  # residuals beyond TRUNCATE·σ count as outliers (constant cost)
MIN_END = 1.0  # hip and half-hip end planes reach at least this far (m) into the footprint; else it is a gable
MIN_DROP = 0.25  # ... and take at least this share of the roof height (a smaller "hip" is a rounded gable end)
MAX_FIT_POINTS = 2500  # the grid search runs on at most this many points; the winner is refitted on all
MAD_POINTS = 500  # the robust residual scale of a fit is taken from about this many of its residuals
BARREL_RADII = (1.05, 1.15, 1.3, 1.5, 1.8, 2.2, 3.0)  # barrel fits: arc radius over half the width
BARREL_PLANES = 16  # a barrel roof is the lower envelope of this many planes tangent to its arc


@dataclass
class Frame:
    """The footprint's main axes: centre, direction of u (radians from x) and half sizes along u (A) and v (B)."""

    cx: float
    cy: float
    theta: float
    half_u: float
    half_v: float

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.theta), np.sin(self.theta)
        dx, dy = x - self.cx, y - self.cy
        return c * dx + s * dy, -s * dx + c * dy

    def world_plane(self, alpha: float, beta: float, c0: float) -> tuple[float, float, float]:
        """z = alpha·u + beta·v + c0 as z = a·x + b·y + c."""
        c, s = np.cos(self.theta), np.sin(self.theta)
        a, b = alpha * c - beta * s, alpha * s + beta * c
        return float(a), float(b), float(c0 - a * self.cx - b * self.cy)


def main_frames(footprint: Polygon) -> list[Frame]:
    """The two frames of the footprint's minimum rotated rectangle (u along either side)."""
    rect = shapely.minimum_rotated_rectangle(footprint)
    if not isinstance(rect, Polygon):
        return []
    rect = np.asarray(rect.exterior.coords)[:4]
    e1, e2 = rect[1] - rect[0], rect[2] - rect[1]
    centre = rect.mean(axis=0)
    l1, l2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    if l1 < 1e-6 or l2 < 1e-6:
        return []
    t1 = float(np.arctan2(e1[1], e1[0]))
    return [Frame(centre[0], centre[1], t1, l1 / 2, l2 / 2),
            Frame(centre[0], centre[1], t1 + np.pi / 2, l2 / 2, l1 / 2)]


@dataclass
class ShapeFit:
    """One fitted standard roof: its type, planes (world z = a·x + b·y + c; the roof is their minimum), number of
    parameters, robust score and the share of points within 3σ."""

    roof_type: int
    planes: list[tuple[float, float, float]]
    k: int
    score: float
    inlier_share: float

    def z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.min([a * x + b * y + c for a, b, c in self.planes], axis=0)


def robust_score(residuals: np.ndarray, sigma: float, k: int) -> float:
    """Penalised robust error: truncated squared residuals in units of σ plus k·ln(n)."""
    r2 = np.minimum((residuals / sigma) ** 2, TRUNCATE**2)
    return float(r2.sum() + k * np.log(max(len(residuals), 2)))


def _batch_fit(features: np.ndarray, z: np.ndarray, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Least squares z ≈ β₀ - Σ βᵢ·Fᵢ for a batch of candidates (features (C, m, n)), refitted twice on the
    points within 3 robust σ of the previous fit. Returns (β (C, m+1), residuals (C, n))."""
    c, m, n = features.shape
    X = np.concatenate([np.ones((c, 1, n)), -features], axis=1)  # (C, m+1, n)
    w = np.ones((c, n))
    step = max(1, n // MAD_POINTS)  # the robust scale from every step-th residual
    for _ in range(iterations):
        Xw = X * w[:, None, :]
        xtx = Xw @ X.transpose(0, 2, 1) + 1e-9 * np.eye(m + 1)  # batched matrix products (BLAS), not einsum
        xtz = Xw @ z
        beta = np.linalg.solve(xtx, xtz[..., None])[..., 0]
        res = z[None] - (beta[:, None, :] @ X)[:, 0, :]
        mad = 1.4826 * np.median(np.abs(res[:, ::step]), axis=1, keepdims=True)
        w = (np.abs(res) <= np.maximum(3 * mad, 0.05)).astype(np.float64)
    return beta, res


def _candidates(fr: Frame, u: np.ndarray, v: np.ndarray) -> list[tuple[int, int, np.ndarray, list]]:
    """(roof type or -1 for the hip family, k, features (C, m, n), shape parameters per candidate) groups."""
    A, B = fr.half_u, fr.half_v
    au, av = np.abs(u), np.abs(v)
    groups: list[tuple[int, int, np.ndarray, list]] = [
        (SHED, 2, v[None, None], [()]),
        (GABLE, 2, av[None, None], [()]),
        (PYRAMID, 2, np.maximum(av, B / A * au)[None, None], [(0.0, B / A)]),
    ]
    hip = [(d, r) for r in (0.6, 0.8, 1.0, 1.25, 1.6, 2.2, 3.0) for d in A - B / r * np.linspace(MIN_DROP, 1.3, 14)
           if 0.0 <= d <= A - MIN_END]
    if hip:
        groups.append((-1, 4, np.stack([np.maximum(av, r * (au - d))[None] for d, r in hip]), hip))
    ws = list(B * np.linspace(0.4, 0.75, 8))
    groups.append((MANSARD, 4, np.stack([np.stack([av, np.maximum(av - w, 0.0)]) for w in ws]), ws))
    radii = [B * q for q in BARREL_RADII]
    groups.append((BARREL, 3, np.stack([(r - np.sqrt(np.maximum(r**2 - v**2, 0.0)))[None] for r in radii]), radii))
    return groups


def _refine_hip(fr: Frame, u: np.ndarray, v: np.ndarray, z: np.ndarray, shape: tuple[float, float]
                ) -> tuple[tuple[float, float], np.ndarray]:
    """A finer grid (±8 % of the half width in d, ±15 % in r) around a hip-family fit: (d, r), β."""
    d0, r0 = shape
    au, av = np.abs(u), np.abs(v)
    grid = [(d0, r0)] + [(d, r) for r in r0 * np.linspace(0.85, 1.15, 7)
            for d in d0 + fr.half_v * np.linspace(-0.08, 0.08, 9)
            if 0.0 <= d <= fr.half_u - MIN_END and r * (fr.half_u - d) >= MIN_DROP * fr.half_v]
    beta, res = _batch_fit(np.stack([np.maximum(av, r * (au - d))[None] for d, r in grid]), z)
    ok = beta[:, 1] > 0
    step = max(1, len(z) // MAD_POINTS)
    best = int(np.argmin(np.where(ok, np.median(np.abs(res[:, ::step]), axis=1), np.inf))) if ok.any() else 0
    return grid[best], beta[best]


def _planes(fr: Frame, roof_type: int, beta: np.ndarray, shape) -> list[tuple[float, float, float]]:
    h = float(beta[0])
    if roof_type == FLAT:
        return [fr.world_plane(0.0, 0.0, h)]
    s = float(beta[1])
    if roof_type == SHED:
        return [fr.world_plane(0.0, -s, h)]
    if roof_type == GABLE:
        return [fr.world_plane(0.0, -s, h), fr.world_plane(0.0, s, h)]
    if roof_type == BARREL:  # z = h - s·(R - √(R² - v²)): planes tangent at evenly turning normals
        radius = shape
        v = radius * np.sin(np.linspace(-1.0, 1.0, BARREL_PLANES) * np.arcsin(min(fr.half_v / radius, 1.0)))
        root = np.sqrt(radius**2 - v**2)
        zk, mk = h - s * (radius - root), -s * v / root
        return [fr.world_plane(0.0, float(m), float(z - m * vk)) for vk, z, m in zip(v, zk, mk)]
    if roof_type == MANSARD:
        s2, w = float(beta[2]), shape
        return [fr.world_plane(0.0, -s, h), fr.world_plane(0.0, s, h),
                fr.world_plane(0.0, -(s + s2), h + s2 * w), fr.world_plane(0.0, s + s2, h + s2 * w)]
    d, r = shape  # hip family and pyramid
    return [fr.world_plane(0.0, -s, h), fr.world_plane(0.0, s, h),
            fr.world_plane(-s * r, 0.0, h + s * r * d), fr.world_plane(s * r, 0.0, h + s * r * d)]


def _hip_type(fr: Frame, d: float, r: float) -> int:
    """Hip when the end planes reach the eaves (pyramid when the ridge is shorter than 15 % of the length),
    half-hip when they stop well above them."""
    if r * (fr.half_u - d) < 0.8 * fr.half_v:
        return HALF_HIP
    return PYRAMID if d < 0.15 * fr.half_u else HIP


def fit_standard_roofs(footprint: Polygon, xyz: np.ndarray, sigma: float, *, min_rectangularity: float = 0.8,
                       min_slope: float = 0.05, min_kink_deg: float = 15.0, rounding: float = 0.0,
                       min_core_points: int = 5) -> list[ShapeFit]:
    """The best fit of every standard roof type (ascending score); empty when the footprint is not close to its
    minimum rotated rectangle (area share below ``min_rectangularity``: L, T, U plans go to the data-driven
    model). ``sigma``: the point noise (m). A fit only counts when the points can show each of its planes
    (:func:`resolved`, ``rounding`` the width over which the cloud rounds edges, ``min_core_points``)."""
    rect = shapely.minimum_rotated_rectangle(footprint)
    if (len(xyz) < 10 or not isinstance(rect, Polygon) or rect.area <= 0
            or footprint.area < min_rectangularity * rect.area):
        return []
    sub = xyz
    if len(xyz) > MAX_FIT_POINTS:
        sub = xyz[np.linspace(0, len(xyz) - 1, MAX_FIT_POINTS).astype(np.int64)]
    z = sub[:, 2]
    fits: dict[int, ShapeFit] = {}
    core: list[np.ndarray] = []  # the points beyond the rounding, found once for all fits

    def consider(rt: int, k: int, planes: list[tuple[float, float, float]]) -> None:
        fit = ShapeFit(rt, planes, k, 0.0, 0.0)
        if rt != FLAT:
            if not core:
                core.append(beyond_rounding(footprint, xyz, rounding))
            if not resolved(fit, core[0], rounding, min_core_points):
                return
        res = xyz[:, 2] - fit.z(xyz[:, 0], xyz[:, 1])
        fit.score = robust_score(res, sigma, k)
        fit.inlier_share = float(np.mean(np.abs(res) <= TRUNCATE * sigma))
        if rt not in fits or fit.score < fits[rt].score:
            fits[rt] = fit

    h = float(np.median(z))
    consider(FLAT, 1, [(0.0, 0.0, h)])
    for fr in main_frames(footprint):
        u, v = fr.local(sub[:, 0], sub[:, 1])
        for rt, k, feats, shapes in _candidates(fr, u, v):
            beta, res = _batch_fit(feats, z)
            cost = np.minimum((res / sigma) ** 2, TRUNCATE**2).sum(axis=1)
            slope_ok = np.abs(beta[:, 1]) >= min_slope if rt == SHED else beta[:, 1] >= min_slope
            if rt == MANSARD:  # a real kink: the lower planes at least ``min_kink_deg`` steeper
                kink = np.degrees(np.arctan(beta[:, 1] + beta[:, 2]) - np.arctan(beta[:, 1]))
                slope_ok &= (beta[:, 2] >= min_slope) & (kink >= min_kink_deg)
            if not slope_ok.any():
                continue
            best = int(np.argmin(np.where(slope_ok, cost, np.inf)))
            shape = shapes[best]
            if rt == -1:  # refine the end planes' start and steepness around the best of the coarse grid
                shape, beta_best = _refine_hip(fr, u, v, z, shape)
                beta = beta.copy()
                beta[best] = beta_best
            kind = _hip_type(fr, *shape) if rt == -1 else rt
            slope = float(np.degrees(np.arctan(beta[best][1])))
            consider(spire_type(kind, slope), k, _planes(fr, kind, beta[best], shape))
    return sorted(fits.values(), key=lambda f: f.score)


def _core_owner(planes: Sequence[tuple[float, float, float]], xyz: np.ndarray, width: float) -> np.ndarray:
    """Index of the plane that is the roof (the lowest) at each point, or -1 where a break line with another plane
    is nearer than ``width`` in plan (its height gap over the difference of their gradients)."""
    coef = np.asarray(planes)
    z = coef[:, :1] * xyz[:, 0] + coef[:, 1:2] * xyz[:, 1] + coef[:, 2:]  # (P, n)
    low = np.argmin(z, axis=0)
    grad = np.hypot(coef[:, None, 0] - coef[None, :, 0], coef[:, None, 1] - coef[None, :, 1])  # (P, P)
    g = grad[:, low]  # (P, n): gradient difference of every plane to the lowest one
    gap = z - z[low, np.arange(len(low))]
    dist = np.where(g > 1e-9, gap / np.where(g > 1e-9, g, 1.0), np.inf)
    dist[low, np.arange(len(low))] = np.inf
    return np.where(dist.min(axis=0) >= width, low, -1)


def beyond_rounding(footprint: Polygon, xyz: np.ndarray, rounding: float) -> np.ndarray:
    """The points farther than ``rounding`` from the outline of ``footprint``."""
    return xyz[shapely.distance(footprint.boundary, shapely.points(xyz[:, :2])) >= rounding]


def resolved(fit: ShapeFit, pts: np.ndarray, rounding: float, min_points: int) -> bool:
    """Whether the points can show every plane of ``fit``: each owns at least ``min_points`` of ``pts`` (the
    points farther than ``rounding`` from the outline, :func:`beyond_rounding`) farther than ``rounding`` from its
    break lines with the other planes, where the cloud is not rounded (a garden shed of 6 m² rounded over 0.5 m is
    a dome that a hip fits; its end planes own no such points). A barrel is taken as four strips across its arc
    (its curvature needs them)."""
    if fit.roof_type == BARREL:
        a, b = np.asarray(fit.planes)[[0, -1], :2]  # the outer tangent planes slope across the arc
        axis = (b - a) / max(float(np.hypot(*(b - a))), 1e-12)
        t = pts[:, :2] @ axis
        edges = np.linspace(t.min(), t.max(), 5) if len(t) else np.zeros(5)
        counts = np.histogram(t, edges)[0]
    else:
        owner = _core_owner(fit.planes, pts, rounding)
        counts = np.bincount(owner[owner >= 0], minlength=len(fit.planes))
    return bool(len(counts) and counts.min() >= min_points)


def rounding_width(footprint: Polygon, xyz: np.ndarray, step: float = 0.1, max_width: float = 0.7,
                   max_rise: float = 1.5, min_bin: int = 5, min_run: int = 3) -> float:
    """Width (m) over which the cloud rounds the roof's outline down to the ground, estimated from the points:
    the median height of the points in bands ``step`` wide from the outline inwards climbs faster than
    ``max_rise`` m per m (steeper than nearly all roof planes, 56°; measured over two bands against the noise)
    in a run that starts within the outermost three bands with points (the lowest points may be cut by a height
    threshold) and ends at that width. About 0 for sharp eaves (laser scanning), about the smoothing radius for
    an image-matching DSM, which averages the roof with the ground beyond its outline. At most ``max_width``: a DSM
    smooths over a few pixels of 0.2-0.25 m; a steep rise farther in is a steep roof plane (mansard), not rounding."""
    d = shapely.distance(footprint.boundary, shapely.points(xyz[:, :2]))
    nbins = int(round(max_width / step)) + 2
    bins = np.floor(d / step).astype(np.int64)
    sel = bins < nbins
    counts = np.bincount(bins[sel], minlength=nbins)
    starts = np.concatenate([[0], np.cumsum(counts)])
    zs = xyz[sel, 2][np.lexsort((xyz[sel, 2], bins[sel]))]
    med = np.array([np.median(zs[starts[i]:starts[i + 1]]) if counts[i] >= min_bin else np.nan for i in range(nbins)])
    rising = np.append(med[2:] - med[:-2] > 2 * max_rise * step, False)  # NaN (too few points) ends a run
    first = int(np.argmax(np.isfinite(med)))
    start = first + int(np.argmax(rising[first:first + 3]))
    if not rising[start]:
        return first * step
    end = start + int(np.argmin(rising[start:]))  # the first window that no longer rises
    if end - start < min_run:  # a step of one or two bands is a wall (laser scans) or an eave, not a ramp
        return first * step
    return float(min(end + 1, nbins - 2)) * step  # its first band still lies on the ramp (the last window rose)


def _half_plane(a: float, b: float, c: float, box: Polygon) -> Polygon:
    """The part of ``box`` where a·x + b·y + c ≤ 0 (Sutherland–Hodgman on the box's ring)."""
    ring = np.asarray(box.exterior.coords)[:-1]
    val = a * ring[:, 0] + b * ring[:, 1] + c
    out = []
    for i in range(len(ring)):
        p, q, fp, fq = ring[i], ring[(i + 1) % len(ring)], val[i], val[(i + 1) % len(ring)]
        if fp <= 0:
            out.append(p)
        if (fp < 0 < fq) or (fq < 0 < fp):
            out.append(p + fp / (fp - fq) * (q - p))
    return Polygon(out) if len(out) >= 3 else Polygon()


def envelope_cells(footprint: Polygon, planes: Sequence[tuple[float, float, float]], grid: float = 0.001
                   ) -> list[tuple[Polygon, int]]:
    """The footprint cut where each plane is the lowest (the roof ``min`` over planes): (cell, plane index)."""
    box = shapely.box(*footprint.buffer(1.0).bounds)
    cells: list[tuple[Polygon, int]] = []
    for i, (ai, bi, ci) in enumerate(planes):
        region = box
        for j, (aj, bj, cj) in enumerate(planes):
            if j != i and not region.is_empty:
                region = shapely.intersection(region, _half_plane(ai - aj, bi - bj, ci - cj, box))
        if region.is_empty:
            continue
        part = shapely.intersection(footprint, region, grid_size=grid)
        cells += [(p, i) for p in shapely.get_parts(part) if isinstance(p, Polygon) and p.area > 1e-6]
    return cells


def cell_heights(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]],
                 x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Roof height of a partition (cell i has plane ``coefficients[i]``) at (x, y); NaN outside every cell."""
    z = np.full(len(x), np.nan)
    for (cell, _), (a, b, c) in zip(cells, coefficients):
        inside = shapely.contains_xy(cell, x, y)
        z[inside] = a * x[inside] + b * y[inside] + c
    return z


def noise_sigma(xyz: np.ndarray, k: int = 12, floor: float = 0.01, max_points: int = 1500) -> float:
    """Point noise (m) from the residuals of local planes: median over points (at most ``max_points``, evenly
    spread) of the smallest principal standard deviation of each point's k neighbours, corrected for the k-point
    fit."""
    sd = local_residual_sd(xyz, k, max_points)
    return max(floor, float(np.median(sd) * np.sqrt(k / max(k - 3, 1))))


def inner_points(footprint: Polygon, xyz: np.ndarray, margin: float, min_share: float = 0.5) -> np.ndarray:
    """The points at least ``margin`` inside the footprint's outline (eaves, walls and the smeared edges of
    image-matching clouds left out), or all points when fewer than ``min_share`` of them are that far inside."""
    if margin <= 0 or len(xyz) == 0:
        return xyz
    far = shapely.distance(footprint.boundary, shapely.points(xyz[:, :2])) >= margin
    return xyz[far] if far.sum() >= max(min_share * len(xyz), 10) else xyz


def uncovered_share(footprint: Polygon, xy: np.ndarray, reach: float, step: float = 0.5) -> float:
    """Share of the footprint (sampled on a ``step`` grid) farther than ``reach`` from every point: where a
    fitted shape would be extrapolated (roofer #172)."""
    minx, miny, maxx, maxy = footprint.bounds
    gx, gy = np.meshgrid(np.arange(minx + step / 2, maxx, step), np.arange(miny + step / 2, maxy, step))
    inside = shapely.contains_xy(footprint, gx, gy)
    if not inside.any() or len(xy) == 0:
        return 1.0
    d, _ = cKDTree(xy).query(np.column_stack([gx[inside], gy[inside]]), distance_upper_bound=reach)
    return float(np.mean(~np.isfinite(d)))
