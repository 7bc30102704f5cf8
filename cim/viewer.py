"""A local viewer for a cim output folder: CesiumJS showing every root tileset (``cim view``).

CesiumJS is not bundled with cim: the viewer serves a local build (``make js`` installs one under
``tests/js/node_modules``; or point ``CIM_CESIUM_DIR`` at any ``Build/Cesium`` folder).
"""

from __future__ import annotations

import json
import os
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from cim.errors import CimError

PAGE = Path(str(resources.files("cim") / "data" / "viewer" / "index.html"))


def find_cesium() -> Path:
    """The CesiumJS build folder to serve, or a clear error saying how to get one."""
    candidates = [os.environ.get("CIM_CESIUM_DIR"),
                  Path(__file__).resolve().parents[1] / "tests" / "js" / "node_modules" / "cesium" / "Build" / "Cesium"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "Cesium.js").is_file():
            return Path(candidate)
    raise CimError("no CesiumJS build found: run `make js` (installs it with npm) or set CIM_CESIUM_DIR to a "
                   "Build/Cesium folder")


def root_tilesets(out_dir: Path) -> list[str]:
    """Paths (relative to ``out_dir``) of tileset.json files that no other tileset of the folder references."""
    tilesets = sorted(p for p in out_dir.rglob("tileset.json")
                      if p.is_file() and not any(s.startswith(".") for s in p.parts))
    referenced: set[Path] = set()
    for path in tilesets:
        text = path.read_text(encoding="utf-8")
        for other in tilesets:
            if other != path and other.parent.is_relative_to(path.parent) and \
                    other.relative_to(path.parent).as_posix() in text:
                referenced.add(other)
    return [p.relative_to(out_dir).as_posix() for p in tilesets if p not in referenced]


class _Handler(SimpleHTTPRequestHandler):
    """/ -> the page, /tilesets.json -> root tilesets, /cesium/* -> CesiumJS, /data/* -> the output folder."""

    def __init__(self, *args, out_dir: Path, cesium: Path, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.out_dir, self.cesium = out_dir, cesium
        super().__init__(*args, directory=str(out_dir), **kwargs)

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith("/cesium/"):
            return str(self.cesium / clean[len("/cesium/"):])
        if clean.startswith("/data/"):
            return super().translate_path("/" + clean[len("/data/"):])
        return str(PAGE)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?", 1)[0] == "/tilesets.json":
            body = json.dumps(root_tilesets(self.out_dir)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        return


def make_server(out_dir: Path, host: str = "127.0.0.1", port: int = 8321,
                cesium: Path | None = None) -> ThreadingHTTPServer:
    """An HTTP server for ``out_dir`` (call ``serve_forever()``; port 0 picks a free one)."""
    if not out_dir.is_dir():
        raise CimError(f"{out_dir}: not a folder")
    handler = partial(_Handler, out_dir=out_dir.resolve(), cesium=cesium or find_cesium())
    return ThreadingHTTPServer((host, port), handler)
