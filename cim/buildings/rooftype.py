"""Roof type (AdV ``Dachform`` code, GeoInfoDok AX_Dachform) from the reconstructed roof planes and cells."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

from cim.buildings.mesh import face_plane
from cim.cityjson import BuildingGeometry

FLAT, SHED, OFFSET_SHED, GABLE, HIP, HALF_HIP, MANSARD, PYRAMID, MIXED, OTHER = (
    1000, 2100, 2200, 3100, 3200, 3300, 3400, 3500, 5000, 9999)
CONE, DOME, SAWTOOTH, BARREL, TOWER = 3600, 3700, 3800, 3900, 4000
ROOF_TYPE_NAMES = {
    FLAT: "flat", SHED: "shed", OFFSET_SHED: "offset shed", GABLE: "gable", HIP: "hip", HALF_HIP: "half-hip",
    MANSARD: "mansard", PYRAMID: "pyramid", CONE: "cone", DOME: "dome", SAWTOOTH: "sawtooth", BARREL: "barrel",
    TOWER: "tower", MIXED: "mixed", OTHER: "other",
}
RIDGE, HIP_EDGE, VALLEY, STEP = "ridge", "hip", "valley", "step"
SPECIAL = (CONE, DOME, SAWTOOTH, BARREL, TOWER)  # decided on the whole roof: their parts are not main roofs


TOWER_SLOPE_DEG = 60.0  # a pyramid or cone at least this steep is a spire (AdV 4000 Turmdach)

# a roof face: (2D cell, slope°, azimuth° (the way it faces, clockwise from grid north), z_min, z_max)
Face = tuple[Polygon, float, float, float, float]


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def spire_type(roof_type: int, slope_deg: float) -> int:
    """``TOWER`` for a pyramid or cone roof at least ``TOWER_SLOPE_DEG`` steep (a spire), else ``roof_type``."""
    return TOWER if roof_type in (PYRAMID, CONE) and slope_deg >= TOWER_SLOPE_DEG else roof_type


def _direction_groups(az: Sequence[float], tol: float) -> list[list[int]]:
    """Indices grouped by facing direction: each joins the first group whose first member is within ``tol``°."""
    groups: list[list[int]] = []
    for i, a in enumerate(az):
        for g in groups:
            if _angle_diff(az[g[0]], a) < tol:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _facing(az: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 2) of the down-slope directions of azimuths (degrees clockwise from north)."""
    a = np.radians(az)
    return np.column_stack([np.sin(a), np.cos(a)])


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Quantiles ``q`` of ``values`` weighted by ``weights`` (step function of the weighted distribution)."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return values[order][np.minimum(np.searchsorted(cum, q), len(values) - 1)]


def curved_type(faces: Sequence[Face], sloped: Sequence[Face], *, angle_tol_deg: float = 25.0,
                min_directions: int = 5, radial_tol_deg: float = 35.0, cone_spread_deg: float = 15.0,
                arc_tol: float = 0.35, shed_spread_deg: float = 20.0, min_share: float = 0.7,
                max_group_share: float = 0.35, min_roundness: float = 0.85) -> int | None:
    """Cone, dome, barrel (tower for a steep cone) or sawtooth from how the roof planes turn, else None.

    * normals turning around a point: at least ``min_directions`` facing directions, each face facing away from
      the roof's centre (within ``radial_tol_deg``), no gap of 120° between directions and no facing direction
      holding more than ``max_group_share`` of the sloped area (a hip roof with dormers has), over a round outline
      (``4π·area / perimeter²`` at least ``min_roundness``; a square has 0.785): a cone when the slopes
      of 80 % of the sloped area agree within ``cone_spread_deg``, a dome when they grow away from the centre; from
      four directions on, a tower roof when the faces are ``TOWER_SLOPE_DEG`` steep on average;
    * normals turning around one horizontal axis: the faces face the two ways across it, at least two per side
      with slopes growing away from the axis, a flat or shallow (< 15°) face along it, and every face on the
      circle through them (``sin slope = distance / R`` within ``arc_tol`` of the median R): a barrel;
    * repeated parallel sheds: at least three planes facing one way, their tops at one height (within 50 % of the
      roof's height range) and their slopes within ``shed_spread_deg`` (80 % of their area), hold 60 % of the
      sloped area; any other sloped faces face the other way (the glazed steps, rounded in image matching).

    ``faces`` are all faces (sloped and flat), ``sloped`` those that count as sloped."""
    total = sum(f[0].area for f in faces)
    s_area = np.array([f[0].area for f in sloped])
    if len(sloped) < 3 or total <= 0 or s_area.sum() < min_share * total:
        return None
    slope = np.array([f[1] for f in sloped])
    az = np.array([f[2] for f in sloped])
    groups = _direction_groups(list(az), angle_tol_deg)
    main = max(groups, key=lambda g: s_area[g].sum())
    # repeated parallel sheds: three planes or more at one height (regularised sheds share slope and azimuth, so a
    # plane is told by its height where its facing line passes the origin, to 0.25 m)
    planes: dict[tuple[float, float, float], float] = {}
    for f in (sloped[i] for i in main):
        u = shapely.get_coordinates(f[0]) @ _facing(np.array([f[2]]))[0]
        key = (f[1], f[2], round(4 * (f[4] + np.tan(np.radians(f[1])) * u.min())) / 4)
        planes[key] = max(planes.get(key, -np.inf), f[4])
    top, low = max(f[4] for f in faces), min(f[3] for f in faces)
    lo, hi = _weighted_quantiles(slope[main], s_area[main], (0.1, 0.9))
    if (len(planes) >= 3 and s_area[main].sum() >= 0.6 * s_area.sum() and hi - lo <= shed_spread_deg
            and top - min(planes.values()) <= 0.5 * (top - low)
            and all(min(d, 180 - d) < angle_tol_deg for d in (_angle_diff(a, az[main[0]]) for a in az))):
        return SAWTOOTH
    centroids = np.array([f[0].centroid.coords[0] for f in faces])
    areas = np.array([f[0].area for f in faces])
    centre = (centroids * areas[:, None]).sum(axis=0) / total
    xy = np.array([f[0].centroid.coords[0] for f in sloped]) - centre
    facing = _facing(az)
    # around a point (a spire of four faces or more too)
    dist = np.hypot(xy[:, 0], xy[:, 1])
    cos = np.einsum("ij,ij->i", facing, xy) / np.maximum(dist, 1e-9)
    gaps = np.diff(np.r_[np.sort(az), np.sort(az)[0] + 360.0])
    radial = s_area[cos >= np.cos(np.radians(radial_tol_deg))].sum() >= 0.8 * s_area.sum() and gaps.max() < 120
    if radial and len(groups) >= 4 and np.average(slope, weights=s_area) >= TOWER_SLOPE_DEG:
        return TOWER
    group_share = max(s_area[g].sum() for g in groups) / s_area.sum()
    outline = shapely.union_all([f[0] for f in faces])
    roundness = 4 * np.pi * outline.area / max(outline.length, 1e-9) ** 2  # 1 for a circle, 0.785 for a square
    if len(groups) >= min_directions and group_share <= max_group_share and roundness >= min_roundness:
        if radial:
            lo, hi = _weighted_quantiles(slope, s_area, (0.1, 0.9))
            if hi - lo <= cone_spread_deg:  # slivers aside
                return spire_type(CONE, float(np.average(slope, weights=s_area)))
            if np.corrcoef(dist, slope)[0, 1] > 0.5:
                return DOME
        return None
    # around an axis: two opposite facing groups
    if len(groups) != 2 or _angle_diff(az[groups[0][0]], az[groups[1][0]]) < 180 - angle_tol_deg:
        return None
    across = facing[groups[0][0]]
    dist = xy @ across * np.where(np.einsum("ij,j->i", facing, across) > 0, 1.0, -1.0)  # signed: >0 downhill side
    shallow = [f for f in faces if f[1] < 15.0 and abs((np.asarray(f[0].centroid.coords[0]) - centre) @ across)
               < 0.25 * np.abs(dist).max()]
    if not shallow or min(len(g) for g in groups) < 2 or (dist <= 0).any():
        return None
    for g in groups:
        order = np.argsort(dist[g])
        if (np.diff(slope[g][order]) <= 0).any():
            return None
    radius = dist / np.sin(np.radians(slope))
    return BARREL if (np.abs(radius / np.median(radius) - 1) <= arc_tol).all() else None


def _two_sided(sloped: Sequence[Face], groups: Sequence[Sequence[int]], *, spread_deg: float = 15.0,
               top_share: float = 0.15) -> int:
    """Gable, mansard or mixed: sloped faces facing two opposite ways (``groups``). Faces of one side within
    ``spread_deg`` of the slope of its largest face are one roof plane (a split or stepped plane): a gable when
    both sides are one slope each. A mansard when a side has steep faces below shallower ones that reach the
    ridge (within ``top_share`` of the height range) and start no lower than halfway up the steep ones (on top
    of them, not side by side along the ridge; the other side may show one slope only: its steep part can be lost
    as a wall); other slopes on a side (dormers, a flat part at the eaves): mixed."""
    top = max(f[4] for f in sloped)
    reach = top_share * (top - min(f[3] for f in sloped))
    two = 0
    for g in groups:
        lead = max(g, key=lambda k: sloped[k][0].area)
        other = [k for k in g if abs(sloped[k][1] - sloped[lead][1]) > spread_deg]
        if not other:
            continue
        steep = [k for k in g if sloped[k][1] >= max(sloped[m][1] for m in g) - spread_deg]
        shallow = [k for k in g if k not in steep]
        if not shallow or max(sloped[k][4] for k in shallow) < top - reach:
            return MIXED
        mid = float(np.mean([(sloped[k][3] + sloped[k][4]) / 2 for k in steep]))
        if min(sloped[k][3] for k in shallow) < mid:  # the shallow part on top of the steep one, not beside it
            return MIXED
        two += 1
    return MANSARD if two else GABLE


def _hip_or_half_hip(sloped: Sequence[Face], large: Sequence[int], small: Sequence[int]) -> int:
    """Hip or half-hip from the eaves of the hip ends (``small``) against the main planes' (``large``): a
    half-hip when the gable wall under a hip end reaches a third of the roof height up (0.35)."""
    eave_main = min(sloped[i][3] for i in large)
    ridge = max(f[4] for f in sloped)
    eave_hip = min(sloped[i][3] for i in small)
    return HALF_HIP if eave_hip - eave_main > 0.35 * (ridge - eave_main) else HIP


def _one_hip_end(sloped: Sequence[Face], angle_tol_deg: float, top_share: float = 0.15) -> int:
    """Three sloped faces: two facing opposite ways and a third across them, no larger than the larger of the two
    (the planes along the ridge are the long ones), that reaches the lower of their tops (within ``top_share`` of
    the height range) is a hip roof hipped at one end only, its other end a gable wall or against
    a neighbour (a terraced end house): hip or half-hip as the hip end's eaves say (the hip end decides the
    form, as a half-hip decides it over a gable). Otherwise mixed."""
    az = [f[2] for f in sloped]
    for e in range(3):
        i, j = (k for k in range(3) if k != e)
        across = abs(90.0 - _angle_diff(az[e], az[i])) <= angle_tol_deg
        top, low = max(f[4] for f in sloped), min(f[3] for f in sloped)
        if (_angle_diff(az[i], az[j]) > 180 - angle_tol_deg and across
                and sloped[e][0].area <= max(sloped[i][0].area, sloped[j][0].area)
                and sloped[e][4] >= min(sloped[i][4], sloped[j][4]) - top_share * (top - low)):
            return _hip_or_half_hip(sloped, [i, j], [e])
    return MIXED


def classify_roof(
    faces: Sequence[Face],
    footprint_area: float,
    *,
    flat_slope_deg: float = 5.0,
    min_share: float = 0.04,
    min_hip_area: float = 0.8,
    angle_tol_deg: float = 25.0,
) -> int:
    """AdV roof type code from roof faces given as (2D cell, slope°, azimuth°, z_min, z_max).

    Flat faces smaller than ``min_share`` of the footprint are ignored (chimneys, noise); sloped faces count from
    ``min_hip_area`` m² (or 1 % of the footprint) so the small hip triangles of half-hip roofs are seen.
    """
    big = [f for f in faces if f[0].area >= min_share * footprint_area]
    sloped = [f for f in faces if f[1] >= flat_slope_deg
              and f[0].area >= max(min_hip_area, 0.01 * footprint_area)]
    if not big and not sloped:
        return OTHER
    flat_area = sum(f[0].area for f in big if f[1] < flat_slope_deg)
    sloped_area = sum(f[0].area for f in sloped)
    if not sloped:
        return FLAT
    special = curved_type(faces, sloped, angle_tol_deg=angle_tol_deg)
    if special is not None:
        return special
    if flat_area > 0.25 * (flat_area + sloped_area):
        return MIXED
    az = [f[2] for f in sloped]
    groups = _direction_groups(az, angle_tol_deg)
    if len(groups) == 1:
        return SHED if len(sloped) == 1 else OFFSET_SHED
    if len(groups) == 2 and _angle_diff(az[groups[0][0]], az[groups[1][0]]) > 180 - angle_tol_deg:
        return _two_sided(sloped, groups)
    if len(groups) == 3 and len(sloped) == 3:
        return _one_hip_end(sloped, angle_tol_deg)
    if len(groups) == 4 and len(sloped) == 4:
        # two opposite pairs at right angles: hip, half-hip or pyramid
        areas = np.array([f[0].area for f in sloped])
        order = np.argsort(areas)
        small, large = order[:2], order[2:]
        if _angle_diff(az[small[0]], az[small[1]]) < 180 - angle_tol_deg:
            return MIXED
        if areas[small].min() > 0.95 * areas[large].max():
            return spire_type(PYRAMID, float(np.average([f[1] for f in sloped], weights=areas)))
        return _hip_or_half_hip(sloped, large, small)
    return MIXED


def _intersection(a: shapely.Geometry, b: shapely.Geometry) -> shapely.Geometry:
    """``a`` ∩ ``b``; where GEOS's overlay fails on an invalid input ("side location conflict": the buffer of a
    self-touching cell boundary, seen on finely partitioned Delft roofs), of the inputs made valid."""
    try:
        return shapely.intersection(a, b)
    except shapely.errors.GEOSException:
        return shapely.intersection(shapely.make_valid(a), shapely.make_valid(b))


def roof_edges(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]], *,
               min_length: float = 0.5, step: float = 0.3, horizontal_deg: float = 5.0, cell: float = 0.5
               ) -> list[tuple[int, int, str, float]]:
    """The edges between roof cells of different planes: (cell i, cell j, kind, length in plan); kind is
    ``ridge`` (horizontal, convex), ``hip`` (sloped, convex), ``valley`` (concave) or ``step`` (the roofs do
    not meet: a vertical wall between them)."""
    out = []
    polys = [c for c, _ in cells]
    tree = shapely.STRtree(polys)
    # cells of a snapped partition may overlap by slivers or leave hairline gaps: shared boundary within 5 cm
    for i, j in zip(*tree.query(polys, predicate="dwithin", distance=0.05)):
        if i >= j or cells[i][1] == cells[j][1]:
            continue
        shared = shapely.line_merge(_intersection(polys[i].boundary, polys[j].boundary.buffer(0.05)))
        lines = [g for g in shapely.get_parts(shared) if isinstance(g, LineString)]
        if not lines:
            continue
        line = max(lines, key=lambda g: g.length)
        if line.length < min_length:
            continue
        p, q = np.asarray(line.coords)[[0, -1]]
        xy = np.asarray([line.interpolate(t, normalized=True).coords[0] for t in np.linspace(0, 1, 7)])
        ci, cj = np.asarray(coefficients[i]), np.asarray(coefficients[j])
        zi, zj = xy @ ci[:2] + ci[2], xy @ cj[:2] + cj[2]
        # a partition edge lies up to ``cell`` off the planes' intersection: allow for the height that makes
        if np.median(np.abs(zi - zj)) > step + cell * float(np.hypot(*(ci[:2] - cj[:2]))):
            out.append((int(i), int(j), STEP, line.length))
            continue
        # convex (ridge, hip) when plane i is the lower one over cell i near the edge (roof = min of the two)
        near = shapely.intersection(polys[i], line.buffer(2.0))
        probe = np.asarray(near.centroid.coords[0]) if not near.is_empty else xy[3]
        convex = probe @ ci[:2] + ci[2] <= probe @ cj[:2] + cj[2]
        rise = abs(zi[-1] - zi[0]) / max(np.hypot(*(q - p)), 1e-9)
        kind = (RIDGE if rise <= np.tan(np.radians(horizontal_deg)) else HIP_EDGE) if convex else VALLEY
        out.append((int(i), int(j), kind, line.length))
    return out


def cross_roof(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]],
               footprint_area: float, *, flat_slope_deg: float = 5.0, min_share: float = 0.04,
               max_other: float = 0.3, max_pitch_spread: float = 15.0) -> int | None:
    """``GABLE`` or ``HIP`` for a roof of several wings (L, T, U plans), else None: sloped cells only (flat ones
    below ``min_share`` of the footprint aside) of one pitch (within ``max_pitch_spread``°: barrels and sawtooth
    roofs are not), joined by horizontal ridges and at least one valley (where wings meet), and by no steps. A
    gable roof when hips are partition noise (shorter than ``max_other`` of the ridges and valleys), a hip roof
    when the wing ends are hipped (longer hips; AdV types a hip roof over an L, T or U plan 3200: the official
    Bavarian ``DEBY_LOD2_4959457``, 25 roof faces over a plan filling 62 % of its rectangle, is 3200)."""
    slope = [np.degrees(np.arctan(np.hypot(a, b))) for a, b, _ in coefficients]
    big = [k for k, (c, lab) in enumerate(cells) if c.area >= min_share * footprint_area and lab >= 0]  # no nodata
    if any(slope[k] < flat_slope_deg for k in big) or len(big) < 2:
        return None
    if np.ptp([slope[k] for k in big]) > max_pitch_spread:
        return None
    length = dict.fromkeys((RIDGE, HIP_EDGE, VALLEY, STEP), 0.0)
    for i, j, kind, n in roof_edges(cells, coefficients):
        if i in big and j in big:
            length[kind] += n
    joins = length[RIDGE] + length[VALLEY]
    if length[VALLEY] == 0 or length[RIDGE] == 0 or length[STEP] > max_other * (joins + length[HIP_EDGE]):
        return None
    return GABLE if length[HIP_EDGE] + length[STEP] <= max_other * joins else HIP


@dataclass(frozen=True)
class RoofTyping:
    """The roof type of a building (its main roof's) and how the roof is made up."""

    roof_type: int
    main_share: float  # share of the roof area in the main roof, its superstructures included
    superstructures: int  # dormers, chimneys, small steps on a roof part (small planes or parts inside it)
    annexes: int  # the other roof parts (lower or smaller parts with their own roofs: garages, porches, wings)

    def attributes(self) -> dict[str, float | int]:
        """The building attributes ``roof_main_share``, ``roof_superstructures``, ``roof_annexes``."""
        return {"roof_main_share": round(self.main_share, 3), "roof_superstructures": self.superstructures,
                "roof_annexes": self.annexes}


def faces_of(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]]
             ) -> list[Face]:
    """Roof faces (2D cell, slope°, azimuth°, z_min, z_max) of cells lying in planes z = a·x + b·y + c."""
    out = []
    for (cell, _), (a, b, c) in zip(cells, coefficients):
        xy = shapely.get_coordinates(cell)
        z = a * xy[:, 0] + b * xy[:, 1] + c
        slope = float(np.degrees(np.arctan(np.hypot(a, b))))
        out.append((cell, slope, float(np.degrees(np.arctan2(-a, -b)) % 360.0), float(z.min()), float(z.max())))
    return out


def _planes_of(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]]
               ) -> tuple[list[tuple[Polygon, int]], list[tuple[float, float, float]]]:
    """One cell per plane: the union of the cells of each label (a Polygon or MultiPolygon)."""
    by_label: dict[int, list[int]] = {}
    for k, (_, lab) in enumerate(cells):
        by_label.setdefault(lab, []).append(k)
    labels = sorted(by_label)
    merged = [(shapely.union_all([cells[k][0] for k in by_label[lab]]), lab) for lab in labels]
    return merged, [coefficients[by_label[lab][0]] for lab in labels]


def _union_find(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """The connected groups of ``n`` items joined by ``pairs`` (each sorted, groups by first member)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values())


def _outline_share(polys: Sequence[Polygon], outline: shapely.Geometry, tol: float = 0.05) -> float:
    """Share of the boundary of the union of ``polys`` that runs along ``outline`` (within ``tol``)."""
    shape = shapely.union_all(list(polys))
    length = shape.boundary.length
    return float(shapely.intersection(shape.boundary, outline).length / length) if length > 0 else 0.0


def _type_of(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]],
             area: float) -> int:
    """AdV type of one roof part: a gable or hip roof of several wings (:func:`cross_roof`), else the face rules
    on one face per plane."""
    wings = cross_roof(cells, coefficients, area)
    return wings if wings is not None else classify_roof(faces_of(*_planes_of(cells, coefficients)), area)


def _minor_planes(faces: Sequence[Face], outline_share: Sequence[float], area: float, small_share: float,
                  inner_share: float, angle_tol_deg: float = 25.0, top_share: float = 0.15,
                  shallow_deg: float = 15.0, shallow_share: float = 1 / 3) -> list[int]:
    """Indices of the planes (one face each) of a roof part that are superstructures:

    * those below ``small_share`` of the part's ``area`` that are not one of a pair of **hip ends** – two sloped
      planes facing opposite ways, across the direction the largest plane faces, of similar area (within a factor
      4: the partition gives parts of a hip end to its neighbours), both reaching the ridge (the top of the
      largest plane, within ``top_share`` of the part's height range), with ``inner_share`` of their boundaries
      together on the part's outline (a gable dormer's planes stay below the ridge, inside the roof);
    * when the largest plane is sloped (``shallow_deg`` or more), the flat or shallow planes (below
      ``shallow_deg``) under ``shallow_share`` of the part that stay below the top ``top_share`` of its height
      range: box dormers and flat strips at the eaves, too wide for the 10 % rule but no second roof form (a
      mansard's shallow planes and a flat top reach the top)."""
    big = max(range(len(faces)), key=lambda k: faces[k][0].area)
    top, low = max(f[4] for f in faces), min(f[3] for f in faces)
    below = top - top_share * (top - low)
    boxes = [k for k, f in enumerate(faces) if faces[big][1] >= shallow_deg and f[1] < shallow_deg
             and f[0].area < shallow_share * area and f[4] < below]
    small = [k for k, f in enumerate(faces) if f[0].area < small_share * area and k not in boxes]
    ridge = faces[big][4] - top_share * (top - low)
    ends = [k for k in small if faces[k][1] >= 5.0 and faces[k][4] >= ridge
            and abs(90.0 - _angle_diff(faces[k][2], faces[big][2]) % 180.0) <= angle_tol_deg]

    def hip_end(k: int) -> bool:
        return any(m != k and _angle_diff(faces[m][2], faces[k][2]) > 180 - angle_tol_deg
                   and 0.25 <= faces[m][0].area / faces[k][0].area <= 4.0
                   and outline_share[k] + outline_share[m] >= inner_share for m in ends)

    return boxes + [k for k in small if k not in ends or not hip_end(k)]


def building_roof_type(cells: Sequence[tuple[Polygon, int]], coefficients: Sequence[tuple[float, float, float]],
                       footprint_area: float, *, small_share: float = 0.1, inner_share: float = 1 / 3,
                       dominance: float = 0.5) -> RoofTyping:
    """The AdV roof type of a building from its roof cells (label < 0: no plane) and their planes: the type of
    its main roof, unless no single form covers ``dominance`` of the roof (then 5000 mixed).

    * Cone, dome, sawtooth, barrel and tower roofs are decided on the whole roof (:func:`classify_roof`).
    * **Roof parts**: the cells joined by ridges, hips, valleys (:func:`roof_edges`) or touching in one plane;
      steps (a wall between two roofs) separate parts. A part below ``small_share`` of the roof area with at
      most half of its boundary on the roof's outline is a **superstructure** (chimney, dormer of its own, small
      step) of the part it shares most boundary with; the others are roof parts, the largest the **main roof**,
      the rest annexes.
    * In a part, a plane below ``small_share`` of the part is a superstructure too, left out of the part's type
      (a dormer joined to the main roof by valleys, a ridge strip, a lone facet), unless it is one of a pair of
      hip ends; so is a flat or shallow plane under a third of a sloped part that stays below its ridge (a box
      dormer, a flat strip at the eaves) (:func:`_minor_planes`).
    * A part's type: a gable or hip roof of several wings meeting in valleys (:func:`cross_roof`), else the face
      rules of :func:`classify_roof` on one face per plane (three faces: a hip at one end, :func:`_one_hip_end`).
    * The building's type is the main roof's type when the parts of that type (with their superstructures) cover
      ``dominance`` of the roof area."""
    keep = [k for k, (c, lab) in enumerate(cells) if lab >= 0 and c.area > 0]
    cells = [cells[k] for k in keep]
    coefficients = [coefficients[k] for k in keep]
    if not cells:
        return RoofTyping(OTHER, 0.0, 0, 0)
    whole = classify_roof(faces_of(cells, coefficients), footprint_area)
    if whole in SPECIAL:
        return RoofTyping(whole, 1.0, 0, 0)
    polys = [c for c, _ in cells]
    area = np.array([p.area for p in polys])
    total = float(area.sum())
    outline = shapely.union_all(polys).boundary.buffer(0.05)
    edges = roof_edges(cells, coefficients)
    ii, jj = shapely.STRtree(polys).query(polys, predicate="intersects")
    same = [(int(i), int(j)) for i, j in zip(ii, jj) if i < j and cells[i][1] == cells[j][1]]  # one plane
    parts = _union_find(len(cells), same + [(i, j) for i, j, kind, _ in edges if kind != STEP])
    part_of = np.empty(len(cells), np.int64)
    for p, members in enumerate(parts):
        part_of[members] = p
    part_area = np.array([area[m].sum() for m in parts])
    small = [p for p, m in enumerate(parts) if part_area[p] < small_share * total
             and _outline_share([polys[k] for k in m], outline) <= 0.5]
    host = np.arange(len(parts))
    for p in small:  # a superstructure belongs to the part it shares the most boundary with
        shared = np.zeros(len(parts))
        for i, j, _, n in edges:
            if part_of[i] != part_of[j] and p in (part_of[i], part_of[j]):
                shared[part_of[j] if part_of[i] == p else part_of[i]] += n
        shared[small] = 0.0
        if shared.max() > 0:
            host[p] = int(shared.argmax())
    roofs = [p for p in range(len(parts)) if p not in small]
    if not roofs:  # only small pieces: the roof as a whole
        return RoofTyping(whole, 1.0, 0, 0)
    n_super = len(small)
    types = {}
    for p in roofs:
        wings = cross_roof([cells[k] for k in parts[p]], [coefficients[k] for k in parts[p]], float(part_area[p]))
        if wings is not None:  # a roof of several wings: its small wing ends are no superstructures
            types[p] = wings
            continue
        pc, pk = _planes_of([cells[k] for k in parts[p]], [coefficients[k] for k in parts[p]])
        faces = faces_of(pc, pk)
        edge = shapely.union_all([c for c, _ in pc]).boundary.buffer(0.05)  # the part's own outline
        minor = set(_minor_planes(faces, [_outline_share([c], edge) for c, _ in pc], float(part_area[p]),
                                  small_share, inner_share)) if len(pc) > 1 else set()
        n_super += len(minor)
        ks = [k for k in parts[p] if cells[k][1] not in {pc[m][1] for m in minor}]
        types[p] = _type_of([cells[k] for k in ks], [coefficients[k] for k in ks], float(area[ks].sum()))
    cover = {p: float(part_area[host == p].sum()) for p in roofs}  # with the superstructures on it
    main = max(roofs, key=lambda p: part_area[p])
    share = sum(cover[p] for p in roofs if types[p] == types[main]) / total
    rt = types[main] if share >= dominance else MIXED
    return RoofTyping(rt, cover[main] / total, n_super, len(roofs) - 1)


def solid_roof_type(geom: BuildingGeometry, *, angle_deg: float = 3.0, offset: float = 0.15) -> RoofTyping:
    """The roof type of an exact LoD2 solid (e.g. a 3DBAG building) from its own upward roof faces: faces whose
    planes agree within ``angle_deg`` and ``offset`` are one plane (as :func:`cim.buildings.evaluate.roof_planes`
    counts them), the footprint is the faces' plan."""
    from cim.buildings.evaluate import roof_faces, roof_planes

    planes = roof_planes(geom, angle_deg, offset)
    cells: list[tuple[Polygon, int]] = []
    coefficients: list[tuple[float, float, float]] = []
    for f in roof_faces(geom):
        n, d = face_plane(f)
        c = f.mean(axis=0)
        lab = next(k for k, (m, e) in enumerate(planes) if n @ m > np.cos(np.radians(angle_deg))
                   and abs(m @ c - e) < offset)
        for poly in shapely.get_parts(shapely.make_valid(Polygon(f[:, :2]))):
            if isinstance(poly, Polygon) and poly.area > 1e-6:
                cells.append((poly, lab))
                coefficients.append((-n[0] / n[2], -n[1] / n[2], d / n[2]))
    return building_roof_type(cells, coefficients, float(sum(c.area for c, _ in cells)))
