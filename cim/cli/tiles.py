"""``cim tiles``: LAS/LAZ/COPC files to a 3D Tiles 1.1 point-cloud tileset (read -> tile -> tiles.pointcloud)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cim.cli.jobs import Force, Profile, Scheduler, TileSize, Workers

console = Console()


def tiles(
    inputs: Annotated[list[Path], typer.Argument(help="LAS/LAZ/COPC files (or glob patterns)")],
    out: Annotated[Path, typer.Option("--out", help="output folder (tileset.json lands here)")],
    crs: Annotated[Optional[str], typer.Option("--crs", help="CRS of the input, with its vertical part, "
                                                              "e.g. EPSG:25832+7837")] = None,
    tile_size: TileSize = 250.0,
    leaf_points: Annotated[int, typer.Option("--leaf-points", help="max points of a leaf node")] = 60_000,
    error_scale: Annotated[float, typer.Option("--error-scale", help="geometric error / node spacing")] = 4.0,
    color_depth: Annotated[str, typer.Option("--color-depth", help="auto, 8 or 16")] = "auto",
    extra: Annotated[Optional[list[str]], typer.Option("--extra", help="extra dimension to keep (repeatable)")] = None,
    allow_ballpark: Annotated[bool, typer.Option("--allow-ballpark", help="accept a ballpark vertical "
                                                                           "transformation (metres off)")] = False,
    accept_height_system: Annotated[Optional[str], typer.Option(
        "--accept-height-system", help="DHHN92-as-DHHN2016: take DHHN92 heights as DHHN2016 (a few cm off; "
                                       "PROJ has no exact transformation)")] = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    implicit: Annotated[bool, typer.Option("--implicit", help="per-tile octrees as 3D Tiles implicit tiling "
                                                              "(subtree files)")] = False,
    meshopt: Annotated[bool, typer.Option("--meshopt", help="compress contents with EXT_meshopt_compression "
                                                            "(needs the meshoptimizer package)")] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="points read per chunk (bounds the reading "
                                                                  "memory)")] = 1_000_000,
    force: Force = False,
    profile: Profile = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="verify the written tree (boxes, errors, "
                                                                   "point count)")] = True,
) -> None:
    """Convert point clouds to a streamable, georeferenced 3D Tiles 1.1 tileset (resumable, out-of-core)."""
    from cim.cli.jobs import execute_template, stage_stats, start_workers_early, tiles_job
    from cim.errors import CimError
    from cim.fileutil import expand_patterns
    from cim.pipeline.job import declared_stage_names

    out = out.resolve()
    files = expand_patterns(inputs)
    document = tiles_job(
        [str(f.resolve()) for f in files], out, crs=crs, chunk_size=chunk_size, tile_size=tile_size,
        leaf_points=leaf_points, error_scale=error_scale, color_depth=color_depth, extra=list(extra or []),
        allow_ballpark=allow_ballpark, implicit=implicit, meshopt=meshopt)
    if accept_height_system:
        document["job"]["accept_height_system"] = accept_height_system
    start_workers_early(scheduler, declared_stage_names(document))  # their imports overlap the checks below

    from cim.io import las
    from cim.pipeline.execute import job_crs
    from cim.tiles3d.check import check_tileset

    # fail fast on missing files and CRSs; every CRS transformation is then checked when the job is planned
    job_crs([las.open_source(f, crs) for f in files])
    summary, run = execute_template(document, scheduler=scheduler, workers=workers, force=force, profile=profile)
    message = f"{summary['points']:,} points, {summary['tiles']} tiles -> {out / 'tileset.json'}"
    if check:
        report = check_tileset(out / "tileset.json")
        withheld = sum(s.get("withheld", 0) for s in stage_stats(run, "tiles.pointcloud"))  # not published
        if report.points != summary["points"] - withheld:
            report.problems.append(f"{report.points} points written, {summary['points']} read, {withheld} of "
                                   "them withheld")
        if not report.ok:
            raise CimError("tileset check failed: " + "; ".join(report.problems[:5]))
        message += f" (checked: {report.tiles} tiles, {report.contents} contents)"
    console.print(message)
    if summary["warnings"]:
        console.print(json.dumps(summary["warnings"][:10], indent=1))


def tiles_check(
    tileset: Annotated[Path, typer.Argument(help="tileset.json")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Check a 3D Tiles tileset beyond the schema: child boxes inside parents, strictly decreasing geometric
    errors, every point inside its tile's box; counts the points of glTF point contents."""
    from cim.errors import InputError
    from cim.tiles3d.check import check_tileset

    if not tileset.is_file():
        raise InputError(tileset, "no such tileset file")
    try:
        report = check_tileset(tileset)
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise InputError(tileset, f"not a readable 3D Tiles tileset ({exc})") from None
    facts = {"ok": report.ok, "tiles": report.tiles, "point_contents": report.contents,
             "other_contents": report.skipped, "points": report.points, "problems": report.problems}
    if as_json:
        console.print_json(json.dumps(facts))
    else:
        console.print(f"{report.tiles} tiles, {report.contents} point contents ({report.points:,} points), "
                      f"{report.skipped} other contents: " + ("[green]ok[/]" if report.ok else "[red]problems[/]"))
        for problem in report.problems[:50]:
            console.print(f"  {problem}")
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("tiles")(tiles)
    app.command("tiles-check")(tiles_check)
