"""``cim view``: look at a job's 3D Tiles in CesiumJS, served from this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def view(
    out_dir: Annotated[Path, typer.Argument(help="a cim output folder (e.g. out/demo)")],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8321,
) -> None:
    """Serve the folder's tilesets with CesiumJS on http://127.0.0.1:PORT (Ctrl-C stops)."""
    from cim.viewer import make_server, root_tilesets

    server = make_server(out_dir, port=port)
    typer.echo(f"{len(root_tilesets(out_dir))} tileset(s); open http://127.0.0.1:{server.server_address[1]}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(app: typer.Typer) -> None:
    app.command()(view)
