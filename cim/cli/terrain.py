"""``cim ground`` and ``cim dtm``: PDAL-kernel style shortcuts for classification and terrain rasters, run as jobs
(templates in :mod:`cim.cli.jobs`): resumable, with ``report.json`` and ``cim.log`` in the output folder.

* ``cim ground IN... --out DIR``: every input written back classified by ``filter.outliers`` and
  ``classify.ground`` (noise 7/18, ground 2, unclassified 1, other classes kept; optionally buildings and
  vegetation), named as the input (.laz), all points in their order. Tiles with buffers give each file the
  context of its neighbours, so adjacent files get the same labels as their merged cloud.
* ``cim dtm IN... --out DIR [--resolution R]``: DTM, DSM, nDSM and density COGs per tile + VRT mosaics (ground is
  classified first unless the inputs already carry class 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cim.cli.jobs import Force, Profile, Scheduler, TileSize, Workers

console = Console()


def ground(
    inputs: Annotated[list[Path], typer.Argument(help="LAS/LAZ/COPC files (or glob patterns)")],
    out: Annotated[Path, typer.Option("--out", help="output folder (files keep their names, as .laz)")],
    crs: Annotated[Optional[str], typer.Option("--crs", help="CRS of the inputs when they declare none")] = None,
    backend: Annotated[str, typer.Option("--backend", help="smrf or csf")] = "smrf",
    objects: Annotated[bool, typer.Option("--objects/--no-objects",
                                          help="also classify buildings (6) and vegetation (3/4/5)")] = False,
    tile_size: TileSize = 250.0,
    buffer: Annotated[float, typer.Option("--buffer", help="context around each tile, also taken from the "
                                                           "other inputs (CRS units)")] = 30.0,
    output_format: Annotated[str, typer.Option("--format", help="las (NAME.laz) or copc (NAME.copc.laz)")] = "las",
    workers: Workers = None,
    scheduler: Scheduler = None,
    force: Force = False,
    profile: Profile = False,
) -> None:
    """Classify noise and ground (SMRF) and write each input back with its new classification. Resumable."""
    from cim.cli.jobs import execute_template, ground_job, input_files
    from cim.extras import require

    if backend not in ("smrf", "csf"):
        raise typer.BadParameter("--backend must be smrf or csf")
    if backend == "csf":
        require("CSF", "csf", "--backend csf")  # before any work: one line naming the extra when it is missing
    if output_format not in ("las", "copc"):
        raise typer.BadParameter("--format must be las or copc")
    out = out.resolve()
    if out in {Path(p).resolve().parent for p in inputs}:
        raise typer.BadParameter("--out must not be the folder of an input (files would be overwritten)")
    document = ground_job(input_files(inputs), out, crs=crs, backend=backend, objects=objects, tile_size=tile_size,
                          buffer=buffer, copc=output_format == "copc")
    execute_template(document, scheduler=scheduler, workers=workers, force=force, profile=profile)


def dtm(
    inputs: Annotated[list[Path], typer.Argument(help="LAS/LAZ/COPC files (or glob patterns)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    resolution: Annotated[float, typer.Option("--resolution", help="cell size (CRS units)")] = 0.5,
    crs: Annotated[Optional[str], typer.Option("--crs", help="CRS of the inputs incl. heights, e.g. "
                                                             "EPSG:25832+7837")] = None,
    classify: Annotated[str, typer.Option("--classify", help="ground classification: auto (when a tile has no "
                                                             "class 2), always, never")] = "auto",
    tile_size: TileSize = 250.0,
    buffer: Annotated[float, typer.Option("--buffer", help="tile buffer (CRS units)")] = 30.0,
    workers: Workers = None,
    scheduler: Scheduler = None,
    force: Force = False,
    profile: Profile = False,
) -> None:
    """Write DTM, DSM, nDSM and density Cloud-Optimized GeoTIFFs per tile plus VRT mosaics. Resumable."""
    from cim.cli.jobs import dtm_job, execute_template, input_files

    if classify not in ("auto", "always", "never"):
        raise typer.BadParameter("--classify must be auto, always or never")
    if not resolution > 0:
        raise typer.BadParameter("--resolution must be positive")
    out = out.resolve()
    document = dtm_job(input_files(inputs), out, crs=crs, resolution=resolution, classify=classify, tile_size=tile_size,
                       buffer=buffer)
    execute_template(document, scheduler=scheduler, workers=workers, force=force, profile=profile)
    vrts = [out / f"{k}.vrt" for k in ("dtm", "dsm", "ndsm", "density")]
    console.print("rasters: " + ", ".join(str(v) for v in vrts if v.exists()))


def register(app: typer.Typer) -> None:
    app.command("ground")(ground)
    app.command("dtm")(dtm)
