"""``cim buildings``: point clouds (+ footprints) to LoD1.2/LoD2.2 CityJSON 2.0 and 3D Tiles 1.1 buildings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from cim.cli.jobs import Force, Profile, Scheduler, TileSize, Workers

console = Console()


def buildings(
    inputs: Annotated[list[Path], typer.Argument(help="LAS/LAZ/COPC files (or glob patterns)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    footprints: Annotated[Optional[Path], typer.Option(
        "--footprints", help="footprints (GeoPackage, GeoJSON, Shapefile, SpatiaLite, CityGML LoD1/2); derived "
                             "from the points when omitted")] = None,
    footprints_crs: Annotated[Optional[str], typer.Option("--footprints-crs", help="CRS of the footprint file "
                                                                                  "when it declares none")] = None,
    id_field: Annotated[Optional[str], typer.Option("--id-field", help="footprint attribute with the id")] = None,
    dtm: Annotated[Optional[Path], typer.Option("--dtm", help="DTM GeoTIFF for ground heights (default: the "
                                                              "DTM the command writes, else ground points "
                                                              "around each footprint)")] = None,
    crs: Annotated[Optional[str], typer.Option("--crs", help="CRS of the points incl. heights, e.g. "
                                                             "EPSG:25832+7837")] = None,
    accept_height_system: Annotated[Optional[str], typer.Option(
        "--accept-height-system", help="DHHN92-as-DHHN2016: take DHHN92 heights as DHHN2016 (a few cm off; "
                                       "PROJ has no exact transformation)")] = None,
    lod1_only: Annotated[bool, typer.Option("--lod1-only", help="LoD1.2 blocks only (fast)")] = False,
    lod1_percentile: Annotated[float, typer.Option("--lod1-percentile", help="roof percentile of LoD1.2")] = 70.0,
    classify: Annotated[str, typer.Option("--classify", help="auto: classify ground (SMRF) and objects "
                                                             "(buildings, vegetation) when the inputs lack class 2 "
                                                             "/ class 6; always; never")] = "auto",
    write_dtm: Annotated[bool, typer.Option("--write-dtm/--no-write-dtm", help="also write the DTM (COG + "
                                                                               "VRT)")] = True,
    dtm_resolution: Annotated[float, typer.Option("--dtm-resolution", help="DTM cell size")] = 0.5,
    tile_size: TileSize = 250.0,
    buffer: Annotated[float, typer.Option("--buffer", help="tile buffer; buildings reaching further beyond "
                                                           "their tile are modelled after the tiles, from "
                                                           "every tile they touch (slower)")] = 40.0,
    tiles: Annotated[bool, typer.Option("--tiles/--no-tiles", help="write 3D Tiles 1.1 too")] = True,
    formats: Annotated[list[str], typer.Option("--format", help="building model files: cityjson, citygml (CityGML "
                                                                "2.0, AdV LoD2 profile); repeat for both")
                       ] = ["cityjson"],  # noqa: B006 - typer needs the list default
    workers: Workers = None,
    scheduler: Scheduler = None,
    force: Force = False,
    profile: Profile = False,
) -> None:
    """Reconstruct buildings (classification when needed, ground heights, LoD1.2 + LoD2.2, CityJSON 2.0, 3D
    Tiles). Resumable: re-running skips finished tiles."""
    from cim.cli.jobs import buildings_job, execute_template, input_files

    out = out.resolve()
    if classify not in ("auto", "always", "never"):
        raise typer.BadParameter("--classify must be auto, always or never")
    if not set(formats) <= {"cityjson", "citygml"}:
        raise typer.BadParameter("--format must be cityjson or citygml")
    files = input_files(inputs)
    need_ground = need_objects = classify == "always"
    sample = sample_inputs(files) if classify == "auto" or (write_dtm and footprints is not None) else None
    if classify == "auto":
        need_ground, need_objects = not sample.has_ground, not sample.has_building
    no_dtm = (write_dtm and not need_ground and footprints is not None
              and ground_on_roofs(sample.ground_xy, files, footprints, crs, footprints_crs))
    write_dtm = write_dtm and not no_dtm
    document = buildings_job(
        files, out, crs=crs, need_ground=need_ground, need_objects=need_objects, classify=classify,
        lod1_only=lod1_only, lod1_percentile=lod1_percentile, footprints=footprints, footprints_crs=footprints_crs,
        id_field=id_field, dtm=dtm, write_dtm=write_dtm, dtm_resolution=dtm_resolution, tile_size=tile_size,
        buffer=buffer, tiles=tiles, formats=tuple(formats))
    if accept_height_system:
        document["job"]["accept_height_system"] = accept_height_system
    summary, _ = execute_template(document, scheduler=scheduler, workers=workers, force=force, profile=profile)
    report_path = out / "buildings" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    console.print(f"{report.get('buildings', 0)} buildings ({report.get('lod22', 0)} LoD2.2, "
                  f"{report.get('lod12', 0)} LoD1.2) -> "
                  + ", ".join(str(out / {"cityjson": "buildings.city.json", "citygml": "buildings.gml"}[f])
                              for f in sorted(set(formats)))
                  + (f", {out / '3dtiles-buildings' / 'tileset.json'}" if tiles else ""))
    rmse = {k: v["median"] for k, v in report.get("rmse_lod22_by_roof_type", {}).items()}
    console.print(json.dumps({"status": report.get("status", {}), "roof_type": report.get("roof_type", {}),
                              "median_point_to_model_rmse_m": rmse}))
    if need_ground or need_objects:
        console.print(f"classified: {'ground (SMRF) ' if need_ground else ''}"
                      f"{'objects (buildings, vegetation)' if need_objects else ''}".strip())
    if no_dtm:
        console.print("no DTM written: the points labelled ground (class 2) lie inside the footprints (roofs; "
                      "a cloud clipped to its buildings)" + ("" if dtm else "; give --dtm for ground heights"))
    if summary["warnings"]:
        console.print(json.dumps(summary["warnings"][:10], indent=1))


@dataclass(frozen=True)
class InputSample:
    """What the first points of the inputs say: any ground (class 2), any building (class 6) point, and the
    positions of (up to a bounded number of) the ground points."""

    has_ground: bool
    has_building: bool
    ground_xy: Any  # (n, 2) array


def sample_inputs(files: list[str], sample: int = 2_000_000, keep: int = 100_000) -> InputSample:
    """One pass over the first ``sample`` points of every input file (``keep`` ground positions in all, evenly
    strided, shared among the files: the driver holds as many for 784 files as for one)."""
    import laspy
    import numpy as np

    from cim.fileutil import expand_patterns

    has_ground = has_building = False
    ground = []
    paths = expand_patterns(files)
    per_file = max(1, keep // max(1, len(paths)))
    for path in paths:
        with laspy.open(path) as reader:
            points = reader.read_points(min(sample, reader.header.point_count))
        cls = np.asarray(points.classification)
        on = np.flatnonzero(cls == 2)
        has_ground |= bool(len(on))
        has_building |= bool((cls == 6).any())
        on = on[:: max(1, -(-len(on) // per_file))]
        ground.append(np.column_stack([np.asarray(points.x)[on], np.asarray(points.y)[on]]))
    return InputSample(has_ground, has_building, np.concatenate(ground) if ground else np.zeros((0, 2)))


def ground_on_roofs(ground_xy: Any, files: list[str], footprints: Path, crs: str | None,
                    footprints_crs: str | None, share: float = 0.5) -> bool:
    """Whether more than ``share`` of the sampled ground points (``ground_xy``, in the inputs' CRS) lie inside the
    footprints: a cloud clipped to its buildings, whose "ground" is roof points; a DTM of them would be a roof
    surface."""
    from cim.buildings.footprints import read_footprints
    from cim.buildings.run import inside_footprints
    from cim.fileutil import expand_patterns
    from cim.io import las
    from cim.pipeline.execute import job_crs

    if not len(ground_xy):
        return False
    fps = read_footprints(footprints, job_crs([las.open_source(f, crs) for f in expand_patterns(files)]),
                          source_crs=footprints_crs)
    return bool(fps) and float(inside_footprints(fps, ground_xy[:, 0], ground_xy[:, 1]).mean()) > share


def register(app: typer.Typer) -> None:
    app.command("buildings")(buildings)
