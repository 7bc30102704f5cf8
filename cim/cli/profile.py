"""``cim profile``: the timeline page of a finished run, from its ``report.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def profile(
    out_dir: Annotated[Path, typer.Argument(help="output folder of a job (holding its report.json)")],
) -> None:
    """Write OUT/profile.html: tasks per worker, the critical path and which step is serial (open it in a browser
    or through `cim view OUT` at /data/profile.html)."""
    from cim.profile import write_profile

    typer.echo(f"wrote {write_profile(out_dir)}")


def register(app: typer.Typer) -> None:
    app.command()(profile)
