"""``cim ground`` and ``cim dtm``: PDAL-kernel style shortcuts for classification and terrain rasters.

* ``cim ground IN... --out DIR``: every input written back classified (noise 7/18, ground 2, other 1, optionally
  buildings/vegetation), same file name, all points kept. The other inputs serve as context around each file's
  edge, so adjacent files get the same labels as their merged cloud.
* ``cim dtm IN... --out DIR [--resolution R]``: DTM, DSM, nDSM and density COGs per tile + VRT mosaics, through the
  resumable tile pipeline (ground is classified first unless the inputs already carry class 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def ground(
    inputs: Annotated[list[Path], typer.Argument(help="LAS/LAZ/COPC files")],
    out: Annotated[Path, typer.Option("--out", help="output folder (files keep their names)")],
    crs: Annotated[Optional[str], typer.Option("--crs", help="CRS of the inputs when they declare none")] = None,
    backend: Annotated[str, typer.Option("--backend", help="smrf or csf")] = "smrf",
    objects: Annotated[bool, typer.Option("--objects/--no-objects",
                                          help="also classify buildings (6) and vegetation (3/4/5)")] = False,
    buffer: Annotated[float, typer.Option("--buffer", help="context taken from the other inputs (CRS units)")] = 30.0,
) -> None:
    """Classify noise and ground (SMRF) and write each input back with its new classification."""
    from cim.terrain.classify import classify_files

    if backend not in ("smrf", "csf"):
        raise typer.BadParameter("--backend must be smrf or csf")
    if out.resolve() in {p.resolve().parent for p in inputs}:
        raise typer.BadParameter("--out must not be the folder of an input (files would be overwritten)")
    for path, stats in classify_files(inputs, out, crs=crs, backend=backend, objects=objects, buffer=buffer):
        counts = stats["classes"]
        console.print(f"{path.name}: {stats['points']} points, ground {counts.get(2, 0)}, "
                      f"noise {counts.get(7, 0) + counts.get(18, 0)}"
                      + (f", building {counts.get(6, 0)}" if objects else "") + f" -> {out / path.name}")


def dtm(
    inputs: Annotated[list[Path], typer.Argument(help="LAS/LAZ/COPC files (or glob patterns)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    resolution: Annotated[float, typer.Option("--resolution", help="cell size (CRS units)")] = 0.5,
    crs: Annotated[Optional[str], typer.Option("--crs", help="CRS of the inputs incl. heights, e.g. "
                                                             "EPSG:25832+7837")] = None,
    classify: Annotated[str, typer.Option("--classify", help="ground classification: auto (when a tile has no "
                                                             "class 2), always, never")] = "auto",
    tile_size: Annotated[float, typer.Option("--tile-size", help="processing tile edge (CRS units)")] = 250.0,
    buffer: Annotated[float, typer.Option("--buffer", help="tile buffer (CRS units)")] = 30.0,
    workers: Annotated[Optional[int], typer.Option("--workers", help="local worker processes")] = None,
    force: Annotated[bool, typer.Option("--force", help="re-run every task")] = False,
) -> None:
    """Write DTM, DSM, nDSM and density Cloud-Optimized GeoTIFFs per tile plus VRT mosaics. Resumable."""
    from cim import outlock
    from cim.pipeline.execute import run_job, summarize
    from cim.pipeline.job import parse_job

    if classify not in ("auto", "always", "never"):
        raise typer.BadParameter("--classify must be auto, always or never")
    if not resolution > 0:
        raise typer.BadParameter("--resolution must be positive")
    out = out.resolve()
    stages: list[dict] = [
        {"type": "read.las", "files": [str(Path(p).resolve()) if Path(p).exists() else str(p) for p in inputs]},
        {"type": "tile", "size": tile_size, "buffer": buffer},
    ]
    if classify != "never":
        stages.append({"type": "filter.outliers"})
        stages.append({"type": "classify.ground", "mode": "auto" if classify == "auto" else "always"})
    stages += [{"type": f"raster.{k}", "resolution": resolution} for k in ("dtm", "dsm", "ndsm", "density")]
    document = {"job": {"name": "dtm", "output": str(out), **({"crs": crs} if crs else {})}, "stages": stages}
    job = parse_job(document, out / "dtm.toml")
    outlock.claim(out)  # one run per output folder; Dask's scratch inside it
    result = run_job(job, workers=workers, force=force)
    summary = summarize(result)
    for failure in summary["failures"]:
        console.print(f"[bold red]failed:[/] {failure['task']}: {failure['error']}")
    for warning in summary["warnings"][:10]:
        console.print(f"[yellow]warning:[/] {warning}")
    if not summary["ok"]:
        raise typer.Exit(1)
    vrts = [out / f"{k}.vrt" for k in ("dtm", "dsm", "ndsm", "density")]
    console.print("rasters: " + ", ".join(str(v) for v in vrts if v.exists()))


def register(app: typer.Typer) -> None:
    app.command("ground")(ground)
    app.command("dtm")(dtm)

