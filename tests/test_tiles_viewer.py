"""A real viewer: CesiumJS in headless Chromium loads the tileset from a local HTTP server."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cim.io import las
from cim.viewer import find_cesium
from test_tiles_helpers import JS, synthetic_cloud

CESIUM = find_cesium()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Handler(SimpleHTTPRequestHandler):
    routes: dict[str, Path] = {}
    result: dict = {}
    got = threading.Event()

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        for prefix, folder in self.routes.items():
            if path.startswith(prefix):
                return str(folder / path[len(prefix):])
        return str(JS / "viewer.html")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).result.update(json.loads(body))
        self.send_response(204)
        self.end_headers()
        type(self).got.set()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module", params=["explicit", "implicit+meshopt"])
def tileset_dir(request, tmp_path_factory) -> Path:
    """The second layout: implicit tiling with EXT_meshopt_compression contents (CesiumJS decodes them)."""
    from typer.testing import CliRunner

    from cim.cli.app import _load_commands, app

    if "meshopt" in request.param:
        pytest.importorskip("meshoptimizer")

    root = tmp_path_factory.mktemp("viewer")
    las.write(root / "kl.laz", synthetic_cloud(60_000, seed=3))
    _load_commands()
    res = CliRunner().invoke(app, ["tiles", str(root / "kl.laz"), "--out", str(root / "out"), "--tile-size", "100",
                                   "--leaf-points", "3000", "--scheduler", "threads",
                                   *(["--implicit", "--meshopt"] if "meshopt" in request.param else [])])
    assert res.exit_code == 0, res.output
    assert "checked" in res.output
    return root / "out"


def test_cesium_loads_renders_and_places_the_tileset(tileset_dir, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    handler = type("H", (_Handler,), {"routes": {"/cesium/": CESIUM, "/data/": tileset_dir}, "result": {},
                                      "got": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(tileset_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    profile = tempfile.mkdtemp(dir=tmp_path)
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--window-size=800,600",
             f"--user-data-dir={profile}"]
    proc = subprocess.Popen([chromium, *flags, url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        got = handler.got.wait(120)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
    assert got, "the page never reported (Cesium did not start)"
    result = handler.result
    assert "fatal" not in result, result.get("fatal")
    assert result["errors"] == []
    assert result["allLoaded"] is True
    assert result["loaded"] >= 5
    meta = json.loads((tileset_dir / "tileset.json").read_text())["metadata"]["properties"]
    lon, lat = meta["originLongitude"], meta["originLatitude"]
    # the camera looks straight down at the tileset: it is above Kaiserslautern, at the tileset's place
    assert abs(result["camera"][0] - lon) < 0.002 and abs(result["camera"][1] - lat) < 0.002
    assert abs(result["centre"][0] - 7.7685) < 0.002 and abs(result["centre"][1] - 49.4635) < 0.002
    assert 230 < result["centre"][2] < 340  # ellipsoidal height of the scene (~284 m + buildings)
    png = base64.b64decode(result["png"].split(",", 1)[1])
    (tmp_path / "screenshot.png").write_bytes(png)
    print({k: v for k, v in result.items() if k != "png"})
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (600, 800)
    lit = np.count_nonzero(image.max(axis=2) > 16)
    assert lit > 0.02 * image.shape[0] * image.shape[1], f"only {lit} non-background pixels"
    # all points drawn close up; from 40x further away only the coarse levels, but never nothing
    assert result["pointsRendered"] == 60_000
    assert 0 < result["far"]["points"] < 60_000 and result["far"]["selected"] >= 1
