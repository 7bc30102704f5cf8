"""``cim panoramas``: ingest, georeference, anonymize, publish, depth maps and colorize a panoramic drive."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cim.cli.jobs import Force, Profile, Scheduler, TileSize, Workers


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
    profile: Profile = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Georeference, anonymize (faces, plates) and publish panoramas (Marzipano tiles, index, STAC), one task per
    image; with --points also depth maps per panorama and colorized point clouds. A job like `cim run`'s (stages
    panoramas.publish, with --points also read.las, tile, panoramas.colorize, write.las): resumable, locked, with
    report.json and cim.log."""
    from cim.cli.jobs import execute_template, input_files, panoramas_job

    document = panoramas_job(poses, images, out.resolve(), crs=crs, trajectory=trajectory,
                             points=input_files(list(points or [])), tile_size=tile_size, buffer=buffer,
                             pose_crs=pose_crs, time_base=time_base, gps_week=gps_week, angles=angles, north=north,
                             detect_width=detect_width, fine_width=fine_width, plates=not no_plates,
                             face_size=face_size)
    summary, _ = execute_template(document, scheduler=scheduler, workers=workers, force=force, profile=profile, show=not as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command()(panoramas)
