"""``cim panoramas``: ingest, georeference, anonymize, publish, depth maps and colorize a panoramic drive."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cim.cli.jobs import Force, Scheduler, TileSize, Workers

console = Console(stderr=True)


def panoramas(
    poses: Annotated[Path, typer.Argument(help="pose file: Trimble MX7 panorama1.csv or cim's generic CSV")],
    images: Annotated[Path, typer.Option("--images", help="folder of the equirectangular images (name + .jpg)")],
    out: Annotated[Path, typer.Option("--out", help="output folder (never the images folder)")],
    trajectory: Annotated[Optional[Path], typer.Option(
        "--trajectory", help="trajectory (GPS time, positions, optional attitude) to interpolate missing poses")] = None,
    points: Annotated[Optional[list[Path]], typer.Option(
        "--points", help="LAS/LAZ in the job CRS: depth maps, measuring and colorized copies")] = None,
    crs: Annotated[str, typer.Option("--crs", help="job CRS (positions, depth, index)")] = "EPSG:25832+7837",
    pose_crs: Annotated[Optional[str], typer.Option(
        "--pose-crs", help="CRS of projected x/y/z columns in the pose file")] = None,
    time_base: Annotated[str, typer.Option(
        "--time-base", help="time column: gps, gps_adjusted, gps_week, unix or utc")] = "gps",
    gps_week: Annotated[Optional[int], typer.Option("--gps-week", help="GPS week for --time-base gps_week")] = None,
    angles: Annotated[str, typer.Option(
        "--angles", help="angle convention: hpr, hpr_rad, esri, yaw_enu (quaternion columns are detected)")] = "hpr",
    north: Annotated[Optional[str], typer.Option(
        "--north", help="headings refer to 'true' or 'grid' north (default: true for lat/lon, grid for x/y)")] = None,
    detect_width: Annotated[int, typer.Option(
        "--detect-width", help="resolution of the pinhole views of the whole band (equirect width)")] = 2048,
    fine_width: Annotated[int, typer.Option(
        "--fine-width", help="resolution of the face search in the ±6° horizon strip (0 = off)")] = 8000,
    no_plates: Annotated[bool, typer.Option("--no-plates", help="skip the number-plate cascade")] = False,
    face_size: Annotated[Optional[int], typer.Option("--face-size", help="top cube face size of the tiles")] = None,
    tile_size: TileSize = 250.0,
    buffer: Annotated[float, typer.Option("--buffer", help="context around each tile of points for the "
                                                           "visibility test (CRS units)")] = 30.0,
    scheduler: Scheduler = None,
    workers: Workers = None,
    force: Force = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Georeference, anonymize (faces, plates) and publish panoramas (Marzipano tiles, index, STAC); with
    --points also depth maps per panorama and colorized point clouds."""
    from cim import guards
    from cim.cli.jobs import colorize_job, execute_template, input_files
    from cim.panoramas.privacy import AnonymizeOptions
    from cim.panoramas.process import ChainOptions, run_panoramas

    *coarse, (lo, hi, _) = AnonymizeOptions().strips  # the last default strip is the full-resolution one
    strips = tuple(coarse) + (((lo, hi, fine_width),) if fine_width else ())
    anonymize = AnonymizeOptions(detect_width=detect_width, plates=not no_plates, strips=strips)
    options = ChainOptions(anonymize=anonymize, face_size=face_size)
    pose_options = {"crs": pose_crs, "time_base": time_base, "gps_week": gps_week, "angles": angles, "north": north}
    guards.keep_scratch_inside(out)  # Dask's scratch files inside --out, not in $TMPDIR
    point_files = input_files(list(points or []))
    summary = run_panoramas(poses, images, out, crs=crs, trajectory=trajectory, points=point_files,
                            options=options, pose_options=pose_options, scheduler=scheduler, workers=workers,
                            force=force, colorize=False)
    if not as_json:
        console.print(f"{summary['panoramas']} panoramas → {out} ({summary['skipped']} already done); "
                      f"blurred {summary['faces']} faces, {summary['plates']} plates")
    if point_files:  # the colorization is a job: tiled, resumable, with report.json and cim.log
        document = colorize_job(point_files, out.resolve(), crs=crs, tile_size=tile_size, buffer=buffer)
        summary["colorized"], _ = execute_template(document, scheduler=scheduler, workers=workers, force=force,
                                                   show=not as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command()(panoramas)
