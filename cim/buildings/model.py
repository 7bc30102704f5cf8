"""Reconstruct buildings: LoD1.2 (percentile block) and LoD2.2 (roof planes over a footprint partition), with
per-building quality attributes and an explicit status. No footprint is ever dropped: without points it gets an
LoD0 footprint surface and status ``no_points``; when LoD2.2 fails it keeps LoD1.2 and says why."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import Polygon

from cim.buildings.extrude import extrude_partition, footprint_cells, merge_coplanar_walls
from cim.buildings.footprints import Footprint
from cim.buildings.mesh import face_plane, point_distances, rms
from cim.buildings.partition import NODATA, carve_corners, label_raster, snap_to_intersections, vectorise
from cim.buildings.planes import Plane, PlaneParams, detect_planes, regularise
from cim.buildings.roofedges import outline_directions, straighten_edges
from cim.buildings.shapes import (cell_heights, envelope_cells, fit_standard_roofs, inner_points, noise_sigma,
                                  robust_score, rounding_width, uncovered_share)
from cim.buildings.rooftype import OTHER, ROOF_TYPE_NAMES, RoofTyping, building_roof_type
from cim.buildings.validity import check_solid, nonmanifold_edges
from cim.cityjson import BuildingGeometry

log = logging.getLogger("cim.buildings.model")

# reconstruction status values (attribute ``status``)
OK = "lod22"
NO_POINTS = "no_points"
TOO_FEW_POINTS = "lod12_only:too_few_points"
NO_PLANES = "lod12_only:no_planes"
INVALID = "lod12_only:invalid_lod22"
FAILED = "lod12_only:error"


@dataclass(frozen=True)
class Failure:
    """Why a building has no LoD2.2: its status and a reason (attributes ``status`` and ``reason``)."""

    status: str
    reason: str


@dataclass
class ReconstructionParams:
    """Parameters of :func:`reconstruct_building` (all heights/lengths in CRS units, metres)."""

    lod1_percentile: float = 70.0  # roofer/3DBAG: 70th percentile of roof points
    ground_percentile: float = 10.0  # 3dfier: 10th percentile of ground points around the footprint
    ground_buffer: float = 3.0  # ground points within this distance outside the footprint
    min_points: int = 20  # fewer roof points than this: LoD1.2 only
    partition_cell: float = 0.5
    max_extension: float = 2.0  # a roof plane never reaches further than this from its own points
    min_cell_area: float = 1.0
    nodata_percentile: float = 20.0  # height of roof parts no plane may claim (low: never too tall)
    min_height: float = 0.5
    mode_filter: int = 1  # 3x3 majority filter rounds on the partition raster ...
    keep_misfit: float | None = None  # ... that never moves a cell to a plane this many inlier distances farther off
    #   its points (None: no limit; 3 kept narrow eaves and step pieces on 3DBAG, median RMSE 0.182 -> 0.169 m, but
    #   p75 rose on every window and small half-hip ends turned gable: roof-library houses 30/30 -> 27/30 typed)
    simplify: float = 0.5  # outline simplification of the partition, in raster cells (steps stay within 1/4 m)
    max_repairs: int = 3  # rounds of corner carving at non-manifold corners before the next partition is tried
    standard_shapes: bool = True  # fits of the standard roof shapes compete with the data-driven model
    noise_epsilon: float = 2.5  # plane inlier distance is at least this many times the estimated point noise
    main_share: float = 0.8  # a standard fit explaining this share of the points gives the roof type (dormers)
    accept_share: float = 0.97  # a standard fit explaining this share of the points is taken without a data model
    height_threshold: float = 2.0  # building points by height: this far above the ground at least
    max_uncovered: float = 0.05  # standard shapes only when at most this share of the footprint lacks points
    max_density: float = 16.0  # the data-driven model uses at most this many points per m² (evenly thinned)
    edge_margin: float = 0.5  # roof shapes are fitted and compared on the points this far inside the outline
    regularise: bool = True  # data-driven planes: outline-normal slope directions, shared slopes, where allowed
    planes: PlaneParams = field(default_factory=PlaneParams)
    # data-driven geometry
    nearest_inliers: int = 8  # a partition cell takes the plane most of its this many nearest inliers lie on ...
    nearest_cell: float = 0.25  # ... on a raster this fine (0 inliers: the plane nearest its points' median height,
    #   on ``partition_cell``); 3DBAG 5912 window ALS median RMSE 0.182 -> 0.118 m (docs/buildings.md) ...
    nearest_max_noise: float = 0.1  # ... where the point noise is at most this (m): image matching (σ 0.15 m) keeps
    #   the median-height rule (the vote typed 4 of its 47 3DBAG roofs mixed or mansard instead of gable); at 0.06
    #   some Delft AHN3 roofs kept it too and the Delft hand labels fell from 63.7 % to 62.5 %
    # standard shapes
    min_core_points: int = 5  # a standard shape's plane must own this many points the cloud's rounding leaves alone

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuildingModel:
    """The models of one footprint and its attributes (shared by all LoDs)."""

    id: str
    footprint: Polygon
    attributes: dict[str, Any]
    lod12: BuildingGeometry | None = None
    lod22: BuildingGeometry | None = None
    lod0: BuildingGeometry | None = None

    @property
    def status(self) -> str:
        return self.attributes["status"]

    @property
    def best(self) -> BuildingGeometry | None:
        """The highest LoD there is: LoD2.2, else LoD1.2, else LoD0 (None when there is no geometry)."""
        return self.lod22 or self.lod12 or self.lod0

    def geometries(self) -> list[BuildingGeometry]:
        """All geometries, highest LoD first (the attributes travel on the first)."""
        out = [g for g in (self.lod22, self.lod12, self.lod0) if g is not None]
        for i, g in enumerate(out):
            g.attributes = self.attributes if i == 0 else {}
        return out


# ----------------------------------------------------------------------------------------------------- heights


def ground_height(footprint: Polygon, ground_xyz: np.ndarray, params: ReconstructionParams,
                  tree: cKDTree | None = None, below: float | None = None) -> float | None:
    """Percentile of the ground points within ``ground_buffer`` around the footprint (widening to 3x, 10 m);
    points inside the footprint (roof points labelled ground) and points higher than ``below`` are no ground."""
    if len(ground_xyz) == 0:
        return None
    tree = tree or cKDTree(ground_xyz[:, :2])
    c = footprint.centroid
    r0 = max(np.hypot(*(np.asarray(footprint.exterior.coords) - [c.x, c.y]).T).max(), 1.0)
    for buf in (params.ground_buffer, 3 * params.ground_buffer, 10.0):
        idx = np.asarray(tree.query_ball_point([c.x, c.y], r0 + buf), dtype=np.int64)
        if len(idx) == 0:
            continue
        gx, gy = ground_xyz[idx, 0], ground_xyz[idx, 1]
        near = shapely.contains_xy(footprint.buffer(buf, join_style="mitre"), gx, gy)
        near &= ~shapely.contains_xy(footprint, gx, gy)
        z = ground_xyz[idx[near], 2]
        if below is not None:
            z = z[z <= below]
        if len(z) >= 3:
            return float(np.percentile(z, params.ground_percentile))
    return None


def height_stats(z: np.ndarray) -> dict[str, float]:
    """Roof height percentiles in the 3DBAG style (min = 2nd, max = 99th percentile)."""
    p = np.percentile(z, [2, 50, 70, 99])
    return {"h_roof_min": float(p[0]), "h_roof_50p": float(p[1]), "h_roof_70p": float(p[2]), "h_roof_max": float(p[3])}


# --------------------------------------------------------------------------------------------------- geometry


def lod12_geometry(bid: str, footprint: Polygon, ground: float, roof: float) -> BuildingGeometry:
    """Flat-roofed prism over the footprint (holes allowed)."""
    cells = footprint_cells(footprint)
    faces, sem = extrude_partition(cells, [(0.0, 0.0, roof)] * len(cells), ground, footprint=footprint,
                                   min_height=0.0)
    return BuildingGeometry(bid, faces, sem, lod="1.2")


def lod0_geometry(bid: str, footprint: Polygon, ground: float) -> BuildingGeometry:
    """The footprint as an upward-facing surface at ground height (MultiSurface LoD0)."""
    faces = [np.array([(x, y, ground) for x, y in np.asarray(c.exterior.coords)[:-1]])
             for c in footprint_cells(footprint)]
    return BuildingGeometry(bid, faces, ["GroundSurface"] * len(faces), lod="0", geometry_type="MultiSurface")


@dataclass
class Lod22Result:
    geometry: BuildingGeometry
    cells: list[tuple[Polygon, int]]
    coefficients: list[tuple[float, float, float]]
    planes: list[Plane]
    nodata_fraction: float
    roof_type: int | None = None  # set when a standard roof shape won (model-driven)
    method: str = "data"  # "data" (planes detected in the points) or "model" (a standard roof shape)
    main_type: int | None = None  # type of the best standard fit when it explains the main roof (dormers aside)
    sigma: float = 0.0  # estimated point noise (m)
    rounding: float = 0.0  # estimated width (m) over which the cloud rounds the outline


def lod22_geometry(
    bid: str, footprint: Polygon, roof_xyz: np.ndarray, ground: float, params: ReconstructionParams
) -> Lod22Result | Failure:
    """LoD2.2 solid, or the failure (status and reason) when no valid model can be made.

    The data-driven model (:func:`_data_driven`) competes with the fits of the standard roof shapes
    (:mod:`cim.buildings.shapes`) under a penalised robust error: a standard shape wins unless the points
    demand more planes. The type of a standard fit that explains the main roof (``main_share`` of the points)
    is kept when the data-driven model wins because of dormers or chimneys."""
    footprint = shapely.set_precision(footprint, 0.001)  # cells, snapping and extrusion share the 1 mm grid
    inner = inner_points(footprint, roof_xyz, params.edge_margin)
    sigma = noise_sigma(inner)
    # the band the cloud rounds down to the ground (image matching) shows no roof shape: left out of the comparison
    rounding = rounding_width(footprint, roof_xyz)
    inner = inner_points(footprint, inner, rounding, min_share=0.0)
    plane_params = replace(params.planes, epsilon=max(params.planes.epsilon, params.noise_epsilon * sigma),
                           noise=sigma)
    # standard shapes only where the points cover the roof: never extrapolated over missing points
    covered = uncovered_share(footprint, roof_xyz[:, :2], params.max_extension) <= params.max_uncovered
    fits = (fit_standard_roofs(footprint, inner, sigma, rounding=rounding, min_core_points=params.min_core_points)
            if params.standard_shapes and covered else [])
    # a standard shape that explains nearly every point leaves nothing for more planes to explain
    sure = bool(fits) and fits[0].inlier_share >= params.accept_share
    data = None if sure else _data_driven(bid, footprint, roof_xyz, ground, params, plane_params)
    data_score = np.inf
    if isinstance(data, Lod22Result):
        data.sigma, data.rounding = sigma, rounding
        zm = cell_heights(data.cells, data.coefficients, inner[:, 0], inner[:, 1])
        res = np.where(np.isfinite(zm), inner[:, 2] - zm, np.inf)
        n_planes = len({lab for _, lab in data.cells if lab != NODATA})
        data_score = robust_score(res, sigma, 3 * n_planes + int(data.nodata_fraction > 0))
    for fit in fits:
        if fit.score >= data_score:
            break
        planes = [Plane(a, b, c, np.zeros(0, np.int64)) for a, b, c in fit.planes]
        model = _solid(bid, footprint, [envelope_cells(footprint, fit.planes)], planes, ground, params, np.inf)
        if isinstance(model, Lod22Result):
            model.roof_type, model.method, model.sigma, model.rounding = fit.roof_type, "model", sigma, rounding
            return model
    if data is None:  # the sure standard shape gave no valid solid: the data-driven model after all
        data = _data_driven(bid, footprint, roof_xyz, ground, params, plane_params)
    if isinstance(data, Lod22Result) and fits and fits[0].inlier_share >= params.main_share:
        data.main_type = fits[0].roof_type
    return data


def _data_driven(bid: str, footprint: Polygon, roof_xyz: np.ndarray, ground: float, params: ReconstructionParams,
                 plane_params: PlaneParams) -> Lod22Result | Failure:
    """The data-driven LoD2.2: planes detected in the points over a raster partition of the footprint.

    Partitions are tried in turn: ridges snapped onto plane intersections, unsnapped, then coarser (removes
    slivers). A partition whose solid has non-manifold corners (roofs of alternating heights around one vertex)
    is repaired by handing the corner of the smallest cell there to a neighbour (:func:`carve_corners`), up to
    ``params.max_repairs`` times."""
    if len(roof_xyz) > params.max_density * footprint.area:  # dense clouds (image matching): thinned evenly
        roof_xyz = roof_xyz[np.linspace(0, len(roof_xyz) - 1, int(params.max_density * footprint.area)).astype(int)]
    planes, labels = detect_planes(roof_xyz, plane_params)
    if not planes:
        return Failure(NO_PLANES, f"no roof plane of {plane_params.min_points} points or more "
                                  f"(inlier distance {plane_params.epsilon:.2f} m)")
    if params.regularise:
        planes = regularise(planes, roof_xyz, outline_directions(footprint))
    nearest = params.nearest_inliers if plane_params.noise <= params.nearest_max_noise else 0
    cell = params.nearest_cell if nearest else params.partition_cell
    raster, transform, _ = label_raster(footprint, roof_xyz, labels, planes, cell=cell,
                                        max_extension=params.max_extension, mode_filter=params.mode_filter,
                                        keep_misfit=math.inf if params.keep_misfit is None
                                        else params.keep_misfit * plane_params.epsilon,
                                        nearest=nearest)
    fine = vectorise(footprint, raster, transform, simplify=params.simplify * cell,
                     min_area=params.min_cell_area)
    partitions = (
        lambda: snap_to_intersections(straighten_edges(fine, planes, footprint, roof_xyz, epsilon=plane_params.epsilon),
                                      planes, footprint),
        lambda: snap_to_intersections(fine, planes, footprint),
        lambda: fine,
        lambda: snap_to_intersections(vectorise(footprint, raster, transform, simplify=2 * cell,
                                                min_area=4 * params.min_cell_area), planes, footprint),
    )
    nodata_z = float(np.percentile(roof_xyz[:, 2], params.nodata_percentile))
    return _solid(bid, footprint, partitions, planes, ground, params, nodata_z)


def _solid(bid: str, footprint: Polygon, partitions, planes: list[Plane], ground: float,
           params: ReconstructionParams, nodata_z: float) -> Lod22Result | Failure:
    """The first valid solid of the given partitions (lists of cells, or functions making them), each repaired
    at non-manifold corners up to ``params.max_repairs`` times; INVALID when none is valid."""
    roofs = _CellRoofs(planes, nodata_z, ground + params.min_height)
    errors = None
    for make in partitions:
        cells = make() if callable(make) else make
        for _ in range(params.max_repairs + 1):
            split, coeffs = roofs.split(cells)
            faces, sem = extrude_partition([p for p, _ in split], coeffs, ground, footprint=footprint,
                                           min_height=params.min_height)
            errors = check_solid(faces)
            if errors.valid:
                return _lod22_result(bid, faces, sem, split, coeffs, planes, footprint)
            bad = nonmanifold_edges(faces)
            repaired = carve_corners(cells, bad.mean(axis=1)[:, :2], params.partition_cell) if len(bad) else cells
            if repaired is cells:
                break
            cells = repaired
    codes = ", ".join(f"{c} {m}" for c, m in errors.errors[:3]) if errors else ""
    log.debug("building %s: LoD2.2 invalid: %s", bid, codes)
    return Failure(INVALID, f"no valid solid from any partition (val3dity codes: {codes})"[:200])


@dataclass
class _CellRoofs:
    """The roof plane of each partition cell: its plane, a flat roof at ``nodata_z`` for nodata cells, and a flat
    roof where the plane would dip below ``zmin``."""

    planes: list[Plane]
    nodata_z: float
    zmin: float

    def split(self, cells: Sequence[tuple[Polygon, int]]
              ) -> tuple[list[tuple[Polygon, int]], list[tuple[float, float, float]]]:
        """(hole-free cells with their labels, their roof coefficients)."""
        split, coeffs = [], []
        for poly, lab in cells:
            plane = (0.0, 0.0, self.nodata_z) if lab == NODATA else self.planes[lab].coefficients
            for piece in footprint_cells(poly):
                split.append((piece, lab))
                coeffs.append(_above(plane, piece, self.zmin))
        return split, coeffs


def _lod22_result(bid: str, faces: list[np.ndarray], sem: list[str], split: list[tuple[Polygon, int]],
                  coeffs: list[tuple[float, float, float]], planes: list[Plane], footprint: Polygon) -> Lod22Result:
    """The valid solid (gable walls merged where that stays valid) with its partition."""
    merged = merge_coplanar_walls(faces, sem)
    if merged[0] is not faces and check_solid(merged[0]).valid:
        faces, sem = merged
    nodata = sum(p.area for p, lab in split if lab == NODATA) / footprint.area
    geom = BuildingGeometry(bid, faces, sem, lod="2.2", surface_attributes=roof_surface_attributes(faces, sem))
    return Lod22Result(geom, split, coeffs, planes, nodata)


def roof_surface_attributes(faces: Sequence[np.ndarray], sem: Sequence[str]) -> list[dict[str, Any]]:
    """Slope and azimuth (degrees; azimuth = down-slope direction clockwise from grid north) of each sloped roof
    face, written on its semantic surface (flat roofs get slope 0 and no azimuth)."""
    out: list[dict[str, Any]] = []
    for f, s in zip(faces, sem):
        if s != "RoofSurface":
            out.append({})
            continue
        n, _ = face_plane(f)
        slope = float(np.degrees(np.arccos(np.clip(n[2], -1.0, 1.0))))
        attrs: dict[str, Any] = {"slope": round(slope, 1)}
        if slope >= 1.0:
            attrs["azimuth"] = round(float(np.degrees(np.arctan2(n[0], n[1])) % 360.0), 1)
        out.append(attrs)
    return out


def _above(plane: tuple[float, float, float], cell: Polygon, zmin: float) -> tuple[float, float, float]:
    """``plane``, or a flat roof when the plane dips below ``zmin`` somewhere over ``cell`` (keeps faces planar)."""
    xy = np.asarray(cell.exterior.coords)
    z = plane[0] * xy[:, 0] + plane[1] * xy[:, 1] + plane[2]
    if z.min() >= zmin:
        return plane
    return (0.0, 0.0, max(zmin, float(z.mean())))


# ------------------------------------------------------------------------------------------------ one building


#: Where a building's ground height came from (attribute ``ground_source``): a DTM, ground points around the
#: footprint, or a flagged estimate (``ground_flag``, with ``ground_reason``).
GROUND_SOURCES = ("dtm", "ground_points", "estimated")


def reconstruct_building(
    fp: Footprint,
    roof_xyz: np.ndarray,
    ground: float | None,
    params: ReconstructionParams | None = None,
    *,
    ground_source: str = "ground_points",
    lod2: bool = True,
) -> BuildingModel:
    """LoD1.2 + LoD2.2 of one footprint from its building points (inside the footprint) and ground height."""
    p = params or ReconstructionParams()
    t0 = time.perf_counter()
    poly = fp.polygon
    area = float(poly.area)
    n = len(roof_xyz)
    attrs: dict[str, Any] = {
        "footprint_area": round(area, 3),
        "point_count": int(n),
        "point_density": round(n / area, 3) if area > 0 else 0.0,
        "ground_source": ground_source,
    }
    attrs.update({f"src_{k}": v for k, v in fp.attributes.items() if isinstance(v, (str, int, float, bool))})
    if ground is None:  # flagged: a guess 3 m under the lowest roof points, never a roof edge
        ground = float(np.percentile(roof_xyz[:, 2], 1)) - 3.0 if n else 0.0
        attrs["ground_source"] = "estimated"
        attrs["ground_reason"] = "no ground points or DTM near the footprint"
        attrs["ground_flag"] = True
    attrs["h_ground"] = round(ground, 3)
    model = BuildingModel(fp.id, poly, attrs)
    if n == 0:
        attrs.update(status=NO_POINTS, roof_type=None, roof_type_name=None, coverage=0.0)
        model.lod0 = lod0_geometry(fp.id, poly, ground)
        return model
    attrs.update({k: round(v, 3) for k, v in height_stats(roof_xyz[:, 2]).items()})
    h1 = float(np.percentile(roof_xyz[:, 2], p.lod1_percentile))
    h1 = max(h1, ground + p.min_height)
    attrs["h_lod12"] = round(h1, 3)
    attrs["lod12_percentile"] = p.lod1_percentile
    model.lod12 = lod12_geometry(fp.id, poly, ground, h1)
    attrs["rmse_lod12"] = _round(rms(point_distances(model.lod12.faces, roof_xyz)))
    v1 = check_solid(model.lod12)
    attrs["valid_lod12"] = v1.valid
    attrs["coverage"] = round(_coverage(poly, roof_xyz, p.partition_cell), 3)
    if not lod2:
        attrs.update(status="lod12", roof_type=None, roof_type_name=None)
        return model
    if n < p.min_points:
        attrs.update(status=TOO_FEW_POINTS, roof_type=None, roof_type_name=None,
                     reason=f"{n} roof points, fewer than {p.min_points}")
        return model
    try:
        res = lod22_geometry(fp.id, poly, roof_xyz, ground, p)
    except Exception as exc:  # noqa: BLE001 - any failure of one building must not stop the others
        log.warning("building %s: LoD2.2 failed: %s: %s", fp.id, type(exc).__name__, exc)
        res = Failure(FAILED, f"{type(exc).__name__}: {exc}"[:200])
    if isinstance(res, Failure):
        attrs.update(status=res.status, reason=res.reason, roof_type=None, roof_type_name=None)
        return model
    model.lod22 = res.geometry
    dist = point_distances(res.geometry.faces, roof_xyz)
    roof_z = np.concatenate([f[:, 2] for f, s in zip(res.geometry.faces, res.geometry.semantics)
                             if s == "RoofSurface"])
    try:
        typing = building_roof_type(res.cells, res.coefficients, area)
    except Exception as exc:  # noqa: BLE001 - a roof that cannot be typed keeps its model, typed "other", and says why
        log.warning("building %s: roof type failed: %s: %s", fp.id, type(exc).__name__, exc)
        typing = RoofTyping(OTHER, 0.0, 0, 0)
        attrs["reason"] = f"roof type not decided: {type(exc).__name__}: {exc}"[:200]
    rt = res.roof_type or res.main_type or typing.roof_type
    attrs.update(
        **typing.attributes(),
        status=OK,
        roof_type=rt,
        roof_type_name=ROOF_TYPE_NAMES[rt],
        n_planes=len({lab for _, lab in res.cells if lab != NODATA}),
        h_eaves=round(float(roof_z.min()), 3),
        h_ridge=round(float(roof_z.max()), 3),
        rmse_lod22=_round(rms(dist)),
        within_20cm_lod22=round(float(np.mean(dist <= 0.2)), 3),
        nodata_fraction=round(res.nodata_fraction, 3),
        valid_lod22=True,
        roof_method=res.method,
        point_noise=round(res.sigma, 3),
        point_rounding=round(res.rounding, 3),
    )
    log.debug("building %s: %s in %.0f ms", fp.id, attrs["status"], 1000 * (time.perf_counter() - t0))
    return model


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _coverage(poly: Polygon, xyz: np.ndarray, cell: float) -> float:
    """Fraction of the footprint's grid cells that hold at least one point."""
    minx, miny, maxx, maxy = poly.bounds
    xs = np.arange(minx + cell / 2, maxx, cell)
    ys = np.arange(miny + cell / 2, maxy, cell)
    if len(xs) == 0 or len(ys) == 0:
        return 1.0 if len(xyz) else 0.0
    gx, gy = np.meshgrid(xs, ys)
    inside = shapely.contains_xy(poly, gx, gy)
    if not inside.any():
        return 1.0 if len(xyz) else 0.0
    col = np.clip(((xyz[:, 0] - minx) / cell).astype(np.int64), 0, len(xs) - 1)
    row = np.clip(((xyz[:, 1] - miny) / cell).astype(np.int64), 0, len(ys) - 1)
    occ = np.zeros(gx.shape, bool)
    occ[row, col] = True
    from scipy import ndimage

    occ = ndimage.binary_dilation(occ, structure=np.ones((3, 3)))  # one cell of slack for sparse points
    return float((occ & inside).sum() / inside.sum())


# ------------------------------------------------------------------------------------------------ many buildings


def has_classes(classification: np.ndarray | None, classes: Sequence[int]) -> bool:
    """Whether any point carries one of ``classes``."""
    return classification is not None and bool(np.isin(classification, classes).any())


def split_points(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, classification: np.ndarray | None, *,
    building_classes: Sequence[int] = (6,), ground_classes: Sequence[int] = (2,),
    ground_mask: np.ndarray | None = None, min_height_above_ground: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(building mask, ground mask). With ASPRS building points (class 6) present they are used; otherwise every
    non-ground point more than ``min_height_above_ground`` above the local ground counts (footprints then decide
    what belongs to a building)."""
    if ground_mask is None:
        ground_mask = np.isin(classification, ground_classes) if classification is not None else np.zeros(len(x), bool)
    if has_classes(classification, building_classes):
        return np.isin(classification, building_classes), ground_mask
    if not ground_mask.any():
        return np.ones(len(x), bool), ground_mask
    g = cKDTree(np.column_stack([x[ground_mask], y[ground_mask]]))
    _, idx = g.query(np.column_stack([x, y]), k=min(8, int(ground_mask.sum())))
    idx = np.atleast_2d(idx.T).T if idx.ndim == 1 else idx
    zg = np.median(z[ground_mask][idx], axis=1)
    noise = np.isin(classification, (7, 18)) if classification is not None else np.zeros(len(x), bool)
    return (~ground_mask) & (~noise) & (z - zg > min_height_above_ground), ground_mask


def reconstruct(
    footprints: Sequence[Footprint],
    building_xyz: np.ndarray,
    ground_xyz: np.ndarray,
    params: ReconstructionParams | None = None,
    *,
    ground_fn=None,
    lod2: bool = True,
    by_height: bool = False,
    other_xyz: np.ndarray | None = None,
) -> list[BuildingModel]:
    """Reconstruct every footprint (in order). ``ground_fn(polygon) -> float | None`` (e.g. a DTM sampler) is
    used when no ground points surround a footprint. ``by_height``: the building points of a footprint are the
    candidates inside it more than ``params.height_threshold`` above its ground, whatever their class.
    ``other_xyz``: points of other classes (1, 2) that a footprint takes as well when those of them above
    ``height_threshold`` outnumber its own points twice (its roof was labelled wrongly)."""
    p = params or ReconstructionParams()
    btree = cKDTree(building_xyz[:, :2]) if len(building_xyz) else None
    otree = cKDTree(other_xyz[:, :2]) if other_xyz is not None and len(other_xyz) else None
    gtree = cKDTree(ground_xyz[:, :2]) if len(ground_xyz) else None
    out = []
    for fp in footprints:
        poly = fp.polygon
        c = poly.centroid
        r = np.hypot(*(np.asarray(poly.exterior.coords) - [c.x, c.y]).T).max()
        pts = _points_in(poly, building_xyz, btree, r)
        # ground points higher than most of the roof are roof points with a wrong class (unless by height)
        below = None if by_height or len(pts) < 4 else float(np.percentile(pts[:, 2], 25)) - 1.0
        ground = ground_height(poly, ground_xyz, p, gtree, below) if gtree is not None else None
        source = "ground_points"
        if ground is None and ground_fn is not None:
            ground, source = ground_fn(poly), "dtm"
        if by_height and ground is not None:
            pts = pts[pts[:, 2] > ground + p.height_threshold]
        taken = False
        if otree is not None and ground is not None:
            extra = _points_in(poly, other_xyz, otree, r)
            extra = extra[extra[:, 2] > ground + p.height_threshold]
            if len(extra) > 2 * len(pts):
                pts, taken = np.concatenate([pts, extra]), True
        model = reconstruct_building(fp, pts, ground, p, ground_source=source, lod2=lod2)
        if taken:
            model.attributes["building_points"] = "height"
        out.append(model)
    return out


def _points_in(poly: Polygon, xyz: np.ndarray, tree: cKDTree | None, radius: float) -> np.ndarray:
    """The points of ``xyz`` (indexed by ``tree``) inside ``poly``, in index order; ``radius`` reaches every
    vertex of ``poly`` from its centroid."""
    if tree is None:
        return np.zeros((0, 3))
    c = poly.centroid
    idx = np.asarray(tree.query_ball_point([c.x, c.y], radius + 1e-6), dtype=np.int64)
    idx.sort()
    pts = xyz[idx]
    return pts[shapely.contains_xy(poly, pts[:, 0], pts[:, 1])]
