"""Roof plane detection on building points: normals from k nearest neighbours, then normal-guided RANSAC with
connected-component filtering, all vectorised in numpy (deterministic for a given seed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.stats import chi2
from scipy.spatial import cKDTree


@dataclass
class PlaneParams:
    """Plane detection parameters (defaults tuned for 5–20 pts/m² airborne LiDAR)."""

    k_normals: int = 10
    epsilon: float = 0.15  # max point-to-plane distance of an inlier (m)
    normal_angle_deg: float = 25.0  # max angle between a point's normal and its plane's normal
    min_points: int = 12
    max_planes: int = 40
    hypotheses: int = 256
    score_sample: int = 4000  # points used to score the hypotheses (all inliers of the best are taken)
    wall_angle_deg: float = 70.0  # planes steeper than this are walls, not roofs
    flat_angle_deg: float = 3.0  # planes flatter than this are snapped to horizontal ...
    flat_confidence: float = 0.999  # ... unless their points reject it at this confidence (χ², 2 parameters)
    connect_cell: float = 1.0  # grid cell of the 2D connectivity of a plane's inliers (m)
    noise: float = 0.0  # estimated vertical point noise (m); > 0: merge planes that one plane explains within it
    merge_factor: float = 1.5  # planes merge when one plane fits their points with an RMS below this × noise
    merge_reach: float = 1.5  # ... and their points come this close in plan (m)
    absorb_share: float = 0.25  # a plane is dropped when other planes explain all but this share of its points
    seed: int = 0


def slope_azimuth(a: float, b: float) -> tuple[float, float]:
    """(slope, azimuth) in degrees of the plane z = a·x + b·y + c; the azimuth is the direction the roof faces
    (down-slope), clockwise from grid north."""
    return float(np.degrees(np.arctan(np.hypot(a, b)))), float(np.degrees(np.arctan2(-a, -b)) % 360.0)


@dataclass
class Plane:
    """z = a·x + b·y + c (a roof plane is never vertical) and the indices of its inlier points."""

    a: float
    b: float
    c: float
    inliers: np.ndarray

    def z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.a * x + self.b * y + self.c

    @property
    def slope_deg(self) -> float:
        return slope_azimuth(self.a, self.b)[0]

    @property
    def azimuth_deg(self) -> float:
        """Direction the roof faces (down-slope), clockwise from grid north."""
        return slope_azimuth(self.a, self.b)[1]

    @property
    def coefficients(self) -> tuple[float, float, float]:
        return (self.a, self.b, self.c)


def _local_pca(xyz: np.ndarray, k: int, at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the k-nearest-neighbour covariance of each point (of the points
    ``at`` indexes, when given)."""
    _, idx = cKDTree(xyz).query(xyz if at is None else xyz[at], k=min(k, len(xyz)))
    nb = xyz[idx] - xyz[idx].mean(axis=1, keepdims=True)
    return np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb) / nb.shape[1])


def local_residual_sd(xyz: np.ndarray, k: int = 12, max_points: int | None = None) -> np.ndarray:
    """Per point (at most ``max_points`` of them, evenly spread over the array): the vertical standard deviation
    of its k nearest neighbours off their best-fitting plane."""
    if len(xyz) < 4:
        return np.zeros(len(xyz))
    at = None if max_points is None or len(xyz) <= max_points else np.linspace(0, len(xyz) - 1, max_points).astype(int)
    w, v = _local_pca(np.asarray(xyz, dtype=np.float64) - np.mean(xyz, axis=0), k, at)
    return np.sqrt(np.maximum(w[:, 0], 0.0)) / np.maximum(np.abs(v[:, 2, 0]), 0.3)


def point_normals(xyz: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (pointing up) and curvature (smallest eigenvalue share) from k-nearest-neighbour PCA."""
    n = len(xyz)
    if n < 3:
        return np.tile([0.0, 0.0, 1.0], (n, 1)), np.zeros(n)
    w, v = _local_pca(xyz, k)
    normals = v[:, :, 0]
    normals[normals[:, 2] < 0] *= -1
    curvature = w[:, 0] / np.maximum(w.sum(axis=1), 1e-12)
    return normals, curvature


def _fit(xyz: np.ndarray) -> tuple[np.ndarray, float]:
    centre = xyz.mean(axis=0)
    _, _, vt = np.linalg.svd(xyz - centre, full_matrices=False)
    n = vt[-1]
    if n[2] < 0:
        n = -n
    return n, float(n @ centre)


def _largest_component(xy: np.ndarray, cell: float) -> np.ndarray:
    """Indices (into xy) of the largest 8-connected group of occupied grid cells."""
    ij = np.floor((xy - xy.min(axis=0)) / cell).astype(np.int64)
    shape = tuple(ij.max(axis=0) + 1)
    occ = np.zeros(shape, bool)
    occ[ij[:, 0], ij[:, 1]] = True
    lab, n = ndimage.label(occ, structure=np.ones((3, 3)))
    if n <= 1:
        return np.arange(len(xy))
    pl = lab[ij[:, 0], ij[:, 1]]
    best = np.bincount(pl)[1:].argmax() + 1
    return np.nonzero(pl == best)[0]


def detect_planes(xyz: np.ndarray, params: PlaneParams | None = None) -> tuple[list[Plane], np.ndarray]:
    """Roof planes of one building's points and the per-point plane label (-1: none)."""
    p = params or PlaneParams()
    xyz = np.asarray(xyz, dtype=np.float64)
    n = len(xyz)
    labels = np.full(n, -1, dtype=np.int64)
    planes: list[Plane] = []
    if n < p.min_points:
        return planes, labels
    origin = xyz.mean(axis=0)
    local = xyz - origin
    normals, curvature = point_normals(local, p.k_normals)
    cos_n = np.cos(np.radians(p.normal_angle_deg))
    cos_wall = np.cos(np.radians(p.wall_angle_deg))
    rng = np.random.default_rng(p.seed)
    candidates = np.nonzero(normals[:, 2] > cos_wall)[0]
    remaining = np.ones(n, dtype=bool)
    failures = 0
    while remaining.sum() >= p.min_points and len(planes) < p.max_planes and failures < 3:
        rem = np.nonzero(remaining)[0]
        pool = np.intersect1d(candidates, rem)
        if len(pool) < p.min_points:
            break
        # hypotheses: the flattest neighbourhoods first, randomly thinned
        order = pool[np.argsort(curvature[pool], kind="stable")]
        order = order[: max(p.hypotheses * 4, 64)]
        hyp = rng.choice(order, size=min(p.hypotheses, len(order)), replace=False)
        hn = normals[hyp]
        hd = np.einsum("ij,ij->i", hn, local[hyp])
        # score every hypothesis on a sample of the remaining points (large roofs), then take all inliers
        sample = rem if len(rem) <= p.score_sample else rem[rng.choice(len(rem), p.score_sample, replace=False)]
        dist = np.abs(local[sample] @ hn.T - hd)
        agree = np.abs(normals[sample] @ hn.T) > cos_n
        score = ((dist < p.epsilon) & agree).sum(axis=0)
        best = int(np.argmax(score))
        inl = rem[(np.abs(local[rem] @ hn[best] - hd[best]) < p.epsilon) & (np.abs(normals[rem] @ hn[best]) > cos_n)]
        if len(inl) < p.min_points:
            failures += 1
            continue
        for _ in range(2):  # refit on the inliers, take the inliers of the refit plane
            nrm, d = _fit(local[inl])
            if nrm[2] <= cos_wall:
                break
            dist1 = np.abs(local[rem] @ nrm - d)
            agree1 = np.abs(normals[rem] @ nrm) > cos_n
            inl2 = rem[(dist1 < p.epsilon) & agree1]
            if len(inl2) < p.min_points:
                break
            inl = inl2
        nrm, d = _fit(local[inl])
        if nrm[2] <= cos_wall:  # a wall: take its points out of play
            remaining[inl] = False
            continue
        inl = inl[_largest_component(local[inl, :2], p.connect_cell)]
        if len(inl) < p.min_points:
            failures += 1
            remaining[hyp[best]] = False
            continue
        nrm, d = _fit(local[inl])
        failures = 0
        remaining[inl] = False
        labels[inl] = len(planes)
        planes.append(_to_plane(nrm, d, origin, inl, p, local))
    planes, labels = _prune(planes, xyz, p)
    if p.noise > 0 and len(planes) > 1:
        planes, labels = merge_coplanar(planes, labels, xyz, p)
    return planes, labels


def _prune(planes: list[Plane], xyz: np.ndarray, p: PlaneParams) -> tuple[list[Plane], np.ndarray]:
    """Drop planes that explain almost no point better than another plane (e.g. a strip of ridge points), then
    give each point to its nearest plane within epsilon and refit the planes on their points."""
    n = len(xyz)
    labels = np.full(n, -1, dtype=np.int64)
    if not planes:
        return planes, labels
    keep = list(range(len(planes)))
    while keep:
        dist = np.stack([np.abs(xyz[:, 2] - planes[k].z(xyz[:, 0], xyz[:, 1])) *
                         np.cos(np.radians(planes[k].slope_deg)) for k in keep], axis=1)
        near = dist < p.epsilon
        only = near & (near.sum(axis=1, keepdims=True) == 1)
        support = only.sum(axis=0)
        # a small facet whose points other planes explain too is absorbed (rounded ridges, noise bands)
        share = support / np.maximum(near.sum(axis=0), 1)
        weak = (support < p.min_points) | (share < p.absorb_share)
        worst = int(np.argmin(np.where(weak, share, np.inf)))
        if not weak.any() or len(keep) == 1:
            break
        del keep[worst]
    planes = [planes[k] for k in keep]
    dist = np.stack([np.abs(xyz[:, 2] - pl.z(xyz[:, 0], xyz[:, 1])) * np.cos(np.radians(pl.slope_deg))
                     for pl in planes], axis=1)
    best = np.argmin(dist, axis=1)
    ok = dist[np.arange(n), best] < p.epsilon
    labels[ok] = best[ok]
    out = []
    for k, pl in enumerate(planes):
        idx = np.nonzero(labels == k)[0]
        new = refit(Plane(pl.a, pl.b, pl.c, idx), xyz[idx], p) if len(idx) >= 3 else pl
        new.inliers = idx
        out.append(new)
    return out, labels


def _vertical_rms(xyz: np.ndarray) -> float:
    """RMS of the vertical residuals of ``xyz`` from its least-squares plane."""
    local = xyz - xyz.mean(axis=0)
    nrm, d = _fit(local)
    if abs(nrm[2]) < 1e-6:
        return np.inf
    return float(np.sqrt(np.mean(((local @ nrm - d) / nrm[2]) ** 2)))


def merge_coplanar(planes: list[Plane], labels: np.ndarray, xyz: np.ndarray, p: PlaneParams
                   ) -> tuple[list[Plane], np.ndarray]:
    """Merge planes whose points one plane explains within the noise: the pair of neighbouring planes (points
    within ``merge_reach`` in plan) whose joint plane has the smallest vertical RMS goes first, while that RMS is
    below ``merge_factor`` × ``noise`` (a test scaled by the estimated noise, not a fixed angle or offset)."""
    groups = {k: np.nonzero(labels == k)[0] for k in range(len(planes))}
    trees = {k: cKDTree(xyz[idx, :2]) for k, idx in groups.items() if len(idx)}
    limit = p.merge_factor * p.noise
    while len(trees) > 1:
        best = None
        keys = sorted(trees)
        for a_i, i in enumerate(keys):
            for j in keys[a_i + 1:]:
                if trees[i].query(xyz[groups[j], :2], distance_upper_bound=p.merge_reach)[0].min() > p.merge_reach:
                    continue
                rms = _vertical_rms(xyz[np.r_[groups[i], groups[j]]])
                if rms <= limit and (best is None or rms < best[0]):
                    best = (rms, i, j)
        if best is None:
            break
        _, i, j = best
        groups[i] = np.sort(np.r_[groups[i], groups[j]])
        trees[i] = cKDTree(xyz[groups[i], :2])
        del groups[j], trees[j]
    if len(trees) == len(planes):
        return planes, labels
    out, new = [], np.full(len(labels), -1, dtype=np.int64)
    for k in sorted(trees):
        idx = groups[k]
        new[idx] = len(out)
        plane = refit(Plane(0.0, 0.0, 0.0, idx), xyz[idx], p)
        plane.inliers = idx
        out.append(plane)
    return out, new


def _to_plane(nrm: np.ndarray, d: float, origin: np.ndarray, inl: np.ndarray, p: PlaneParams,
              local: np.ndarray) -> Plane:
    """Plane in world coordinates; a near-horizontal plane is made exactly horizontal at the median height where
    its points allow it (:func:`_flat_ok`: real flat roofs drain with slopes of 1–2°)."""
    slope = np.degrees(np.arccos(min(1.0, abs(nrm[2]))))
    if slope < p.flat_angle_deg and _flat_ok(local[inl], p.flat_confidence):
        return Plane(0.0, 0.0, float(np.median(local[inl, 2]) + origin[2]), inl)
    a, b = -nrm[0] / nrm[2], -nrm[1] / nrm[2]
    c = d / nrm[2]
    # back to world coordinates: z - oz = a (x - ox) + b (y - oy) + c
    return Plane(float(a), float(b), float(c + origin[2] - a * origin[0] - b * origin[1]), inl)


def _flat_ok(local: np.ndarray, confidence: float) -> bool:
    """Whether a horizontal plane fits ``local`` (n, 3) as well as the free least-squares plane: the squared
    vertical residuals rise, in units of the free fit's residual variance, by no more than the χ² quantile
    ``confidence`` for the two slope parameters taken away (always when ``confidence`` >= 1)."""
    if confidence >= 1.0 or len(local) <= 3:
        return True
    rss_free = _rss_free(local)
    rss_flat = float(np.sum((local[:, 2] - local[:, 2].mean()) ** 2))
    variance = max(rss_free / (len(local) - 3), 1e-12)
    return (rss_flat - rss_free) / variance <= float(chi2.ppf(confidence, 2))


def refit(plane: Plane, xyz: np.ndarray, params: PlaneParams | None = None) -> Plane:
    """Least-squares refit of ``plane`` on ``xyz`` (its points after relabelling)."""
    p = params or PlaneParams()
    if len(xyz) < 3:
        return plane
    origin = xyz.mean(axis=0)
    nrm, d = _fit(xyz - origin)
    new = _to_plane(nrm, d, origin, np.arange(len(xyz)), p, xyz - origin)
    new.inliers = plane.inliers
    return new


def regularise(planes: list[Plane], xyz: np.ndarray, directions: np.ndarray, *, max_deg: float = 10.0,
               max_slope_deg: float = 4.0, confidence: float = 0.999, flat_deg: float = 3.0) -> list[Plane]:
    """Roof planes made regular where their points allow it: each constraint is tested against the free fit (the
    increase of the squared residuals in units of the free fit's residual variance within the χ² quantile
    ``confidence`` for the parameters the constraint takes away):

    * the down-slope direction of a sloped plane within ``max_deg`` of a normal of a footprint edge becomes that
      normal (``directions``: the edges' directions and their normals, radians): eaves and ridges horizontal and
      parallel or orthogonal to the outline;
    * sloped planes whose slopes lie within ``max_slope_deg`` of each other share one slope (symmetric gables and
      hips, the wings of L/T/U plans), fitted to all their points together.

    ``xyz``: the points the planes' ``inliers`` index."""
    out = list(planes)
    sloped = [k for k, p in enumerate(planes) if p.slope_deg >= flat_deg and len(p.inliers) >= 3]
    pts = {k: xyz[planes[k].inliers] for k in sloped}
    centre = xyz.mean(axis=0)
    local = {k: p - centre for k, p in pts.items()}
    up: dict[int, np.ndarray] = {}  # the up-slope unit direction of each sloped plane, snapped where allowed
    snapped: set[int] = set()
    cand = np.column_stack([np.cos(directions), np.sin(directions)])
    cand = np.r_[cand, -cand]
    for k in sloped:
        g = np.array([planes[k].a, planes[k].b])
        up[k] = g / np.hypot(*g)
        if len(cand) == 0:
            continue
        best = cand[np.argmax(cand @ up[k])]
        if (np.degrees(np.arccos(np.clip(best @ up[k], -1.0, 1.0))) <= max_deg
                and _f_ok([local[k]], [best], _rss_free(local[k]), 3, confidence, shared=False)):
            up[k] = best
            snapped.add(k)
    groups: list[list[int]] = []
    for k in sorted(sloped, key=lambda k: planes[k].slope_deg):
        if groups and planes[k].slope_deg - planes[groups[-1][0]].slope_deg <= max_slope_deg:
            groups[-1].append(k)
        else:
            groups.append([k])
    for group in groups:
        parts, ups = [local[k] for k in group], [up[k] for k in group]
        shared = len(group) > 1 and _f_ok(parts, ups, sum(_rss_free(p) for p in parts), 3 * len(group), confidence,
                                          shared=True)
        for k, (s, c) in zip(group, _fit_slopes(parts, ups, shared=shared)):
            if shared or k in snapped:
                a, b = s * up[k]
                out[k] = Plane(float(a), float(b), float(c + centre[2] - a * centre[0] - b * centre[1]),
                               planes[k].inliers)
    return out


def _rss_free(local: np.ndarray) -> float:
    """Sum of squared vertical residuals of the least-squares plane z = a·x + b·y + c."""
    A = np.column_stack([local[:, 0], local[:, 1], np.ones(len(local))])
    _, res, *_ = np.linalg.lstsq(A, local[:, 2], rcond=None)
    return float(res[0]) if len(res) else 0.0


def _fit_slopes(parts: list[np.ndarray], ups: list[np.ndarray], shared: bool) -> list[tuple[float, float]]:
    """(slope, intercept) of planes z = s·(u·p) + c over each part's points (local coordinates) with the given
    up-slope directions u; one slope for all when ``shared``."""
    if not shared:
        out = []
        for p, u in zip(parts, ups):
            A = np.column_stack([p[:, :2] @ u, np.ones(len(p))])
            (s, c), *_ = np.linalg.lstsq(A, p[:, 2], rcond=None)
            out.append((float(s), float(c)))
        return out
    n = len(parts)
    rows = sum(len(p) for p in parts)
    A = np.zeros((rows, n + 1))
    z = np.concatenate([p[:, 2] for p in parts])
    r = 0
    for i, (p, u) in enumerate(zip(parts, ups)):
        A[r:r + len(p), 0] = p[:, :2] @ u
        A[r:r + len(p), i + 1] = 1.0
        r += len(p)
    sol, *_ = np.linalg.lstsq(A, z, rcond=None)
    return [(float(sol[0]), float(c)) for c in sol[1:]]


def _f_ok(parts: list[np.ndarray], ups: list[np.ndarray], rss_free: float, params_free: int, confidence: float,
          shared: bool) -> bool:
    """Whether the constrained fit (:func:`_fit_slopes`) raises the squared residuals over the free fit (``rss_free``
    with ``params_free`` parameters), in units of the free fit's residual variance, by no more than the χ² quantile
    ``confidence`` for the number of parameters the constraint takes away."""
    fits = _fit_slopes(parts, ups, shared)
    rss = sum(float(np.sum((p[:, 2] - s * (p[:, :2] @ u) - c) ** 2)) for p, u, (s, c) in zip(parts, ups, fits))
    n = sum(len(p) for p in parts)
    lost = max(params_free - (len(parts) + 1 if shared else 2 * len(parts)), 1)
    variance = max(rss_free / max(n - params_free, 1), 1e-12)
    return (rss - rss_free) / variance <= float(chi2.ppf(confidence, lost))
