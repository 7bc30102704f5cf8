"""``cim compare-buildings``: cim's building models against official ones (AdV LoD2 CityGML)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(report: dict[str, Any], limit: int) -> Table:
    o = report["overall"]
    table = Table(title=f"{report['ours']['buildings']} ours, {report['official']['buildings']} official, "
                        f"{o['matched']} matched (mean IoU {_fmt(o['iou_mean'])}); roof type agreement "
                        f"{_fmt(o['roof_type_agreement'])} of {o['roof_type_compared']}")
    for col in ("official", "ours", "IoU", "roof type", "dH (m)", "roof median", "roof RMSE", "RMSE - median"):
        table.add_column(col, justify="left" if col in ("official", "ours") else "right")
    rows = sorted(report["buildings"], key=lambda r: -(r["roof"].get("rmse") or 0.0))
    for r in rows[:limit]:
        rt = f"{_fmt(r['roof_type_ours'])}/{_fmt(r['roof_type_official'])}"
        table.add_row(r["official"], r["ours"], _fmt(r["iou"]), rt, _fmt(r["measured_height_diff"]),
                      _fmt(r["roof"].get("median")), _fmt(r["roof"].get("rmse")),
                      _fmt(r["roof"].get("rmse_minus_median")))
    h, roof = o["measured_height_diff"], o["roof"]
    table.add_section()
    table.add_row("all", "", _fmt(o["iou_mean"]), _fmt(o["roof_type_agreement"]), _fmt(h["median"]),
                  _fmt(roof.get("median")), _fmt(roof.get("rmse")), _fmt(roof.get("rmse_minus_median")))
    if len(rows) > limit:
        table.caption = f"the {limit} largest roof RMSEs shown; every building is in the JSON report"
    return table


def compare_buildings(
    ours: Annotated[Path, typer.Argument(help="cim's buildings: CityJSON(Seq) or CityGML")],
    official: Annotated[Path, typer.Argument(help="official buildings: CityGML 1.0/2.0 (AdV LoD2)")],
    out: Annotated[Optional[Path], typer.Option("--out", help="write the JSON report here")] = None,
    min_iou: Annotated[float, typer.Option("--min-iou", help="smallest footprint IoU of a match")] = 0.5,
    spacing: Annotated[float, typer.Option("--spacing", help="grid spacing of the roof height samples (m)")] = 0.5,
    limit: Annotated[int, typer.Option("--limit", help="buildings shown in the table")] = 20,
    accept_height_system: Annotated[Optional[str], typer.Option(
        "--accept-height-system", help="DHHN92-as-DHHN2016: compare DHHN92 heights with DHHN2016 ones as they are "
                                       "(cim's products of DHHN92 points declare DHHN2016)")] = None,
) -> None:
    """Match buildings by footprint overlap and report roof type agreement, measuredHeight difference and roof
    surface difference (ours minus official), per building and overall."""
    from cim.citygml.compare import compare
    from cim.errors import ConfigError
    from cim.fileutil import write_text_atomic

    if not 0 < min_iou <= 1:
        raise ConfigError("--min-iou", "must lie in (0, 1]")
    if spacing <= 0:
        raise ConfigError("--spacing", "must be positive")
    if accept_height_system not in (None, "DHHN92-as-DHHN2016"):
        raise ConfigError("--accept-height-system", "the one value is DHHN92-as-DHHN2016")
    report = compare(ours, official, min_iou=min_iou, spacing=spacing, accept_height_system=accept_height_system)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    console.print(_table(report, limit))
    if out is not None:
        write_text_atomic(out, json.dumps(report, indent=1, sort_keys=True))
        console.print(f"report: {out}")


def register(app: typer.Typer) -> None:
    app.command("compare-buildings")(compare_buildings)
