"""A local viewer for a cim output folder: CesiumJS showing every root tileset (``cim view``).

The page, its script and a trimmed CesiumJS and Marzipano build ship with cim (``cim/data/viewer``);
``CIM_CESIUM_DIR`` may point at another ``Build/Cesium`` folder. The server is hardened for a machine with other
users and a browser that visits other sites: it serves only files inside the folder after resolving links, never
lists a directory, hides dot-files and ``cim.log``, accepts only GET and HEAD, and only the Host names of the
address it listens on (no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import mimetypes
import os
import shutil
import socket
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from cim.errors import CimError

if TYPE_CHECKING:
    from cim.panoramas.georef import Panorama

log = logging.getLogger("cim.viewer")

ASSETS = Path(str(resources.files("cim") / "data" / "viewer")).resolve()
PAGE = ASSETS / "index.html"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
HIDDEN_NAMES = frozenset({"cim.log"})
_TYPES = {".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".wasm": "application/wasm",
          ".json": "application/json", ".js": "text/javascript", ".mjs": "text/javascript",
          ".subtree": "application/octet-stream", ".pnts": "application/octet-stream",
          ".b3dm": "application/octet-stream", ".ktx2": "image/ktx2"}


def find_cesium() -> Path:
    """The CesiumJS build folder to serve: ``CIM_CESIUM_DIR`` when set, else the one shipped with cim."""
    env = os.environ.get("CIM_CESIUM_DIR")
    candidate = Path(env) if env else ASSETS / "cesium"
    if not (candidate / "Cesium.js").is_file():
        where = "CIM_CESIUM_DIR" if env else "the cim package (reinstall cim)"
        raise CimError(f"{candidate}: no Cesium.js in this CesiumJS build folder (from {where})")
    return candidate


def root_tilesets(out_dir: Path) -> list[str]:
    """Paths (relative to ``out_dir``) of tileset.json files that no other tileset of the folder references."""
    tilesets = sorted(p for p in out_dir.rglob("tileset.json")
                      if p.is_file() and not any(s.startswith(".") for s in p.relative_to(out_dir).parts))
    referenced: set[Path] = set()
    for path in tilesets:
        text = path.read_text(encoding="utf-8")
        for other in tilesets:
            if other != path and other.parent.is_relative_to(path.parent) and \
                    other.relative_to(path.parent).as_posix() in text:
                referenced.add(other)
    return [p.relative_to(out_dir).as_posix() for p in tilesets if p not in referenced]


def panorama_markers(out_dir: Path) -> list[dict]:
    """One marker per published panorama of the folder: where it stands, its heading and its Marzipano tiles.

    Read from the ``panoramas.json`` indexes in the folder (written by ``cim panoramas``, whose tiles are made
    from the anonymized images only); a panorama whose ``marzipano.json`` is not in the folder is left out.
    """
    from cim.panoramas.georef import Panorama

    out_dir = out_dir.resolve()
    markers = []
    for found in sorted(out_dir.rglob("panoramas.json")):
        index = inside(out_dir, found.relative_to(out_dir).as_posix())  # not hidden, no link out of the folder
        if index is None:
            continue
        try:
            panoramas = [Panorama.from_dict(d) for d in json.loads(index.read_text(encoding="utf-8"))["panoramas"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: not a panorama index (%s); no markers from it", index, exc)
            continue
        for pano in panoramas:
            marker = _marker(out_dir, index.parent, pano)
            if marker is not None:
                markers.append(marker)
    return markers


def _marker(out_dir: Path, base: Path, pano: Panorama) -> dict | None:
    tiles = pano.products.get("tiles")
    try:
        found = inside(out_dir, (base / tiles).relative_to(out_dir).as_posix()) if tiles else None
    except ValueError:  # an absolute path elsewhere
        found = None
    if found is None:
        return None
    try:
        config = json.loads(found.read_text(encoding="utf-8"))
        marzipano = {k: config[k] for k in ("faceSize", "levels", "tileUrl", "previewUrl", "cubeMapPreviewFaceOrder")}
    except (ValueError, KeyError) as exc:
        log.warning("%s: not a Marzipano configuration (%s); no marker", found, exc)
        return None
    heading = float(pano.angles[0])
    return {"name": pano.name, "lon": pano.lon, "lat": pano.lat, "height": pano.h_ell, "heading": heading,
            "datetime": pano.datetime, "tiles": found.parent.relative_to(out_dir).as_posix() + "/",
            # yaw 0 of north-up tiles is grid north: look along the heading; else yaw 0 is the camera's forward
            "yaw": math.radians(heading) if config.get("yawZero") == "grid north" else 0.0, "marzipano": marzipano}


def inside(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root`` (links resolved), or None when it is hidden, outside or absent."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p.startswith(".") or p in HIDDEN_NAMES or "\\" in p or "\0" in p for p in parts):
        return None
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    if any(p.startswith(".") or p in HIDDEN_NAMES for p in target.relative_to(root).parts):
        return None  # a link to a hidden file of the folder
    return target


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """Host header values the server accepts (None: any, when it listens on every address)."""
    if host in ("", "0.0.0.0", "::"):
        return None
    names = set(LOOPBACK_NAMES)
    try:
        names.add(f"[{host}]" if ipaddress.ip_address(host).version == 6 else host)
    except ValueError:
        names.add(host.lower())
    return frozenset(names | {f"{n}:{port}" for n in names})


class _Handler(BaseHTTPRequestHandler):
    """``/`` the page, ``/viewer/*`` its assets, ``/cesium/*`` CesiumJS, ``/data/*`` the output folder,
    ``/tilesets.json`` and ``/panoramas.json`` what the page shows."""

    server_version = "cim-view"
    sys_version = ""

    server: ViewerServer

    def __init__(self, *args, out_dir: Path, cesium: Path, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.out_dir, self.cesium = out_dir, cesium
        super().__init__(*args, **kwargs)

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):  # every method but GET and HEAD
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        hosts = self.server.hosts
        if hosts is not None and (self.headers.get("Host") or "").lower() not in hosts:
            self.send_error(HTTPStatus.FORBIDDEN, "unknown Host")
            return
        path = unquote(urlsplit(self.path).path)
        if path in ("/tilesets.json", "/panoramas.json"):
            try:
                found = root_tilesets(self.out_dir) if path == "/tilesets.json" else panorama_markers(self.out_dir)
            except (OSError, ValueError) as exc:  # a file of the folder changed or broke while being read
                log.warning("%s: %s", path, exc)
                self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)
                return
            self._send(json.dumps(found).encode(), "application/json", body)
            return
        target = self._resolve(path)
        try:
            stream = open(target, "rb") if target is not None else None  # noqa: SIM115 - closed below
        except OSError:  # removed or unreadable since it was resolved
            stream = None
        if stream is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with stream:
            size = os.fstat(stream.fileno()).st_size
            self._headers(size, _TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0]
                          or "application/octet-stream")
            if body:
                shutil.copyfileobj(stream, self.wfile)

    def _resolve(self, path: str) -> Path | None:
        if path in ("/", "/index.html"):
            return PAGE
        for prefix, root in (("/viewer/", ASSETS), ("/cesium/", self.cesium), ("/data/", self.out_dir)):
            if path.startswith(prefix):
                return inside(root, path[len(prefix):])
        return None

    def _send(self, data: bytes, content_type: str, body: bool) -> None:
        self._headers(len(data), content_type)
        if body:
            self.wfile.write(data)

    def _headers(self, size: int, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(size))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


class ViewerServer(ThreadingHTTPServer):
    """The ``cim view`` HTTP server (``serve_forever()``); ``url`` is where a browser on this machine opens it."""

    daemon_threads = True

    def __init__(self, host: str, port: int, handler: Callable[..., _Handler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)
        self.hosts = allowed_hosts(host, self.server_address[1])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{f'[{name}]' if ':' in name else name}:{port}/"


def make_server(out_dir: Path, host: str = "127.0.0.1", port: int = 8321,
                cesium: Path | None = None) -> ViewerServer:
    """An HTTP server for ``out_dir`` on ``host:port`` (port 0 picks a free one)."""
    if not out_dir.is_dir():
        raise CimError(f"{out_dir}: not a folder")
    handler = partial(_Handler, out_dir=out_dir.resolve(), cesium=(cesium or find_cesium()).resolve())
    try:
        return ViewerServer(host, port, handler)
    except OSError as exc:
        raise CimError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
