"""Planning-time CRS checks: every transformation a job will need is asked of PROJ before any work starts.

A job places its products on the globe (3D Tiles and panoramas: EPSG:4979), writes a catalog (EPSG:4326) and may
read footprints in a CRS of their own. Each of these transformations is looked up here, once, for the inputs' area,
and refused (:class:`CrsError`, exit code 2) where PROJ could do it only roughly:

* a *ballpark* vertical step, which takes orthometric heights as ellipsoidal (tens of metres off in Germany);
* a *ballpark* datum step, which takes one datum as another (metres to hundreds of metres off);
* a grid the exact transformation needs and PROJ does not find, when its absence costs more than
  :data:`cim.crs.GRID_TOLERANCE_M` by EPSG's stated accuracies (the rule of :func:`cim.crs.transformation_problem`).
  Those are coarse (DHDN -> ETRS89 in Bavaria: 1.0 m without BETA2007, 0.9 m with it, though the two differ by
  ~1 m), which is one reason cim ships the grids it relies on;
* DHHN92 heights (EPSG:5783), which PROJ cannot take exactly to DHHN2016 or ellipsoidal heights, unless the job
  accepts them as DHHN2016 (``[job] accept_height_system = "DHHN92-as-DHHN2016"``, see :func:`working_crs`).

A declared CRS whose area of use the inputs lie far outside of (a mislabelled file) is named with its file in the
error, or warned about when every transformation is still possible.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyproj

from cim import crs as crs_mod
from cim.errors import CimWarning, CrsError, InputError
from cim.points import Bounds

if TYPE_CHECKING:
    from cim.io.las import LasSource


DHHN92, DHHN2016 = 5783, 7837
DHHN92_AS_DHHN2016 = "DHHN92-as-DHHN2016"  # the one accept_height_system value
PLACING_STAGES = ("tiles.pointcloud", "tiles.buildings", "panoramas.colorize")  # need EPSG:4979
_AREA_MARGIN_DEG = 2.0  # data often run past their zone: eastern Bavaria in UTM 32 lies 1.8 degrees beyond it
_FEET = {"international feet": 0.3048, "US survey feet": 1200 / 3937}


@dataclass(frozen=True)
class Need:
    """A transformation a job needs: to ``target``, for ``purpose``; ``allow_ballpark`` makes a refusal a warning."""

    target: pyproj.CRS
    purpose: str
    allow_ballpark: bool = False
    override: str = ""  # the setting that accepts a rough transformation here, if the stage has one


def check_transformations(source: pyproj.CRS, targets: Iterable[Need | pyproj.CRS], *, allow_ballpark: bool = False,
                          bounds: Bounds | None = None) -> None:
    """Refuse (:class:`CrsError`) every transformation from ``source`` to ``targets`` PROJ could do only roughly.

    ``allow_ballpark`` (or a :class:`Need`'s own) turns the refusal into a :class:`CimWarning`.
    """
    for need in targets:
        if isinstance(need, pyproj.CRS):
            need = Need(need, "output", allow_ballpark)
        problem = crs_mod.transformation_problem(source, need.target, bounds)
        if problem is None:
            continue
        accept = ""
        if need.override:
            accept = f"; {need.override} = true accepts it, metres off (cim tiles: --allow-ballpark)"
        message = f"{problem} (needed for {need.purpose}{accept})"
        if not (allow_ballpark or need.allow_ballpark):
            raise CrsError(message)
        warnings.warn(message, CimWarning, stacklevel=2)


def area_problem(crs: pyproj.CRS, bounds: Bounds) -> str | None:
    """Why ``bounds`` cannot lie in ``crs`` (their centre is outside the CRS's area of use), or ``None``."""
    horizontal = crs_mod.horizontal_part(crs)
    area = _area_of_use(horizontal)
    if area is None:
        return None
    centre = _lonlat(horizontal, (bounds.minx + bounds.maxx) / 2, (bounds.miny + bounds.maxy) / 2)
    if centre is None:
        return "the coordinates cannot be transformed to longitude/latitude with the declared CRS"
    if _inside(area, *centre):
        return None
    lon, lat = centre
    return (f"the points' centre ({lon:.4f}, {lat:.4f}) lies outside the area of use of "
            f"{crs_mod.describe(horizontal)} ({area.name})")


def _area_of_use(crs: pyproj.CRS) -> pyproj.crs.AreaOfUse | None:
    """The CRS's area of use, looked up by its EPSG code where a file's WKT carries none."""
    if crs.area_of_use is None and crs.to_epsg():
        return pyproj.CRS.from_epsg(crs.to_epsg()).area_of_use
    return crs.area_of_use


def _lonlat(crs: pyproj.CRS, x: float, y: float) -> tuple[float, float] | None:
    try:
        lon, lat = crs_mod.lonlat_transformer(crs).transform(x, y)
    except pyproj.exceptions.ProjError:
        return None
    return (lon, lat) if math.isfinite(lon) and math.isfinite(lat) else None


def _inside(area: pyproj.crs.AreaOfUse, lon: float, lat: float) -> bool:
    w, s, e, n = area.bounds
    m = _AREA_MARGIN_DEG
    return w - m <= lon <= e + m and s - m <= lat <= n + m


def misplacement(crs: pyproj.CRS, bounds: Bounds) -> str | None:
    """Why ``bounds`` cannot lie in ``crs`` (:func:`area_problem`) with the likely cause, or ``None``."""
    problem = area_problem(crs, bounds)
    return None if problem is None else f"{problem}: {likely_cause(crs, bounds)}"


def likely_cause(crs: pyproj.CRS, bounds: Bounds) -> str:
    """A guess at why coordinates lie outside their CRS's area: feet declared as metres, or a question."""
    horizontal = crs_mod.horizontal_part(crs)
    area = _area_of_use(horizontal)
    if area is not None and crs_mod.linear_unit_factor(horizontal) == 1.0:
        for name, metres in _FEET.items():
            x, y = (bounds.minx + bounds.maxx) / 2 * metres, (bounds.miny + bounds.maxy) / 2 * metres
            centre = _lonlat(horizontal, x, y)
            if centre is not None and _inside(area, *centre):
                return f"the coordinates look like values in {name} in a CRS declared in metres"
    return "is the declared CRS right?"


def working_crs(crs: pyproj.CRS, accept_height_system: str | None, *, heights_needed: bool = True) -> pyproj.CRS:
    """The CRS a job works in: ``crs``, or with DHHN92 heights re-declared as DHHN2016 where the job accepts that.

    PROJ has no exact DHHN92 -> DHHN2016 transformation (only EPSG's offset route via EVRF2007, stated accuracy
    0.2 m), so where the job transforms heights (``heights_needed``) DHHN92 is refused unless
    ``accept_height_system == "DHHN92-as-DHHN2016"``: then the heights are kept as they are and declared DHHN2016,
    a difference of a few centimetres (see docs/heights.md).
    """
    vertical = crs_mod.vertical_part(crs)
    is_dhhn92 = vertical is not None and vertical.to_epsg() == DHHN92
    if accept_height_system is not None and not is_dhhn92:
        raise CrsError(f"accept_height_system = {accept_height_system!r}, but the inputs' heights are "
                       f"{crs_mod.describe(vertical)}, not DHHN92 (EPSG:5783)")
    if not is_dhhn92 or (accept_height_system is None and not heights_needed):
        return crs
    if accept_height_system != DHHN92_AS_DHHN2016:
        raise CrsError(
            f"{crs_mod.describe(crs)}: heights in DHHN92 (EPSG:5783) have no exact transformation to DHHN2016 or "
            "ellipsoidal heights in PROJ; convert them to DHHN2016 (EPSG:7837), or accept them as DHHN2016, a few "
            "centimetres off: job.accept_height_system = \"DHHN92-as-DHHN2016\" in the job file "
            "(cim tiles, cim buildings: --accept-height-system DHHN92-as-DHHN2016)")
    horizontal = crs_mod.horizontal_part(crs)
    accepted = pyproj.CRS(pyproj.crs.CompoundCRS(f"{horizontal.name} + DHHN2016 height",
                                                  [horizontal, pyproj.CRS.from_epsg(DHHN2016)]))
    warnings.warn(f"{crs_mod.describe(crs)}: DHHN92 heights are taken as DHHN2016 (accept_height_system; "
                  "a few centimetres off): the products declare DHHN2016", CimWarning, stacklevel=2)
    return accepted


def job_needs(stages: Sequence[object]) -> list[Need]:
    """The transformations a job's stages need (``stages``: objects with ``name`` and ``options``)."""
    needs = [Need(pyproj.CRS.from_epsg(4326), "the catalog's longitude/latitude bounds", allow_ballpark=True)]
    for i, stage in enumerate(stages):
        name = getattr(stage, "name", "")
        if name in PLACING_STAGES:
            options = getattr(stage, "options", None)
            override = "allow_ballpark" if hasattr(options, "allow_ballpark") else ""
            needs.append(Need(crs_mod.GEOGRAPHIC_3D, f"stages[{i}] {name}: placement on the globe",
                              bool(getattr(options, "allow_ballpark", False)), override))
        footprints = getattr(getattr(stage, "options", None), "footprints", None)
        declared = getattr(getattr(stage, "options", None), "footprints_crs", None) or _vector_crs(footprints)
        if footprints and declared:
            target = crs_mod.horizontal_part(crs_mod.resolve(declared))
            needs.append(Need(target, f"stages[{i}] {name}: footprints {footprints}"))
    return needs


def _vector_crs(path: str | None) -> str | None:
    """The CRS a vector file declares (None where it declares none or cannot be read: the stage reports that)."""
    if not path:
        return None
    import pyogrio  # only for jobs with footprint files

    try:
        return pyogrio.read_info(path).get("crs")
    except Exception:  # noqa: BLE001 - pyogrio's own error hierarchy; the stage names the file when it reads it
        return None


def check_job(crs: pyproj.CRS, stages: Sequence[object], sources: Sequence[LasSource],
              accept_height_system: str | None = None) -> pyproj.CRS:
    """The planning hook: the CRS the job works in, after checking every transformation its stages will need.

    An input whose points lie outside the CRS's area of use is named, with the likely cause, in the refusal (or in
    a warning where every transformation is still possible), rather than failing every task later.
    """
    needs = job_needs(stages)
    crs = working_crs(crs, accept_height_system, heights_needed=any(crs_mod.is_3d(n.target) for n in needs))
    misplaced = next(((s, c) for s in sources if (c := misplacement(crs, s.bounds))), None)
    if misplaced is None:
        check_transformations(crs, needs, bounds=Bounds.union(s.bounds for s in sources) if sources else None)
        return crs
    source, cause = misplaced
    try:
        check_transformations(crs, needs, bounds=source.bounds)
    except CrsError as exc:
        raise InputError(source.path, f"{cause}; so {exc}. Give the right CRS with --crs (job key 'crs')") from None
    warnings.warn(f"{source.path}: {cause}", CimWarning, stacklevel=2)
    return crs

