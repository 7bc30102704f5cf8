"""``cim view``: look at a job's 3D Tiles, terrain and panoramas in CesiumJS, served from this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def view(
    out_dir: Annotated[Path, typer.Argument(help="a cim output folder (e.g. out/demo)")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on (0: any free one)")] = 8321,
    host: Annotated[str, typer.Option(help="address to listen on; anything but 127.0.0.1 / ::1 / localhost "
                                           "serves the folder to the network")] = "127.0.0.1",
) -> None:
    """Serve the folder's tilesets with CesiumJS on http://127.0.0.1:PORT (Ctrl-C stops)."""
    from cim.viewer import make_server, root_tilesets

    server = make_server(out_dir, host=host, port=port)
    if host not in LOOPBACK:
        typer.echo(f"warning: serving {out_dir} to every machine that can reach {host}:{server.server_address[1]}"
                   + (" (any Host header accepted)" if host in ("0.0.0.0", "::") else ""), err=True)
    typer.echo(f"{len(root_tilesets(out_dir))} tileset(s); open {server.url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(app: typer.Typer) -> None:
    app.command()(view)
