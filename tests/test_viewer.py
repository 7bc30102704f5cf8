"""`cim view` serves the page, the root tilesets of an output folder, their files and CesiumJS, and nothing else:
real HTTP requests against a server started here (hostile Host headers, methods, links out of the folder)."""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cim.errors import CimError
from cim.viewer import allowed_hosts, find_cesium, make_server, root_tilesets


def _folder(root: Path) -> Path:
    out = root / "out"
    (out / "3dtiles" / "pointcloud" / "0_0").mkdir(parents=True)
    (out / "3dtiles" / "pointcloud" / "tileset.json").write_text('{"root": {"content": {"uri": "0_0/tileset.json"}}}')
    (out / "3dtiles" / "pointcloud" / "0_0" / "tileset.json").write_text('{"root": {}}')
    (out / "buildings").mkdir()
    (out / "buildings" / "tileset.json").write_text('{"root": {}}')
    (out / "buildings" / "a b.glb").write_bytes(b"glTF\x02\x00\x00\x00")
    (out / ".cim").mkdir()
    (out / ".cim" / "state.json").write_text("{}")
    (out / ".cim" / "tileset.json").write_text('{"root": {}}')
    (out / "cim.log").write_text("Traceback in /home/someone/secret")
    (out / ".env").write_text("TOKEN=1")
    secret = root / "secret.txt"
    secret.write_text("outside the folder")
    (out / "passwd").symlink_to("/etc/passwd")
    (out / "secret.txt").symlink_to(secret)
    (out / "up").symlink_to(root)
    (out / "log-link").symlink_to(out / "cim.log")
    (out / "inside.json").symlink_to(out / "buildings" / "tileset.json")
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    root = tmp_path_factory.mktemp("view")
    cesium = root / "Cesium"
    cesium.mkdir()
    (cesium / "Cesium.js").write_text("// stand-in build")
    srv = make_server(_folder(root), port=0, cesium=cesium)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _request(server: tuple[str, int], path: str, method: str = "GET", host: str | None = None) \
        -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*server, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{server[1]}")
    conn.endheaders()
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, dict(res.getheaders()), body


def test_root_tilesets_skip_the_ones_referenced_by_others_and_hidden_folders(tmp_path: Path) -> None:
    assert root_tilesets(_folder(tmp_path)) == ["3dtiles/pointcloud/tileset.json", "buildings/tileset.json"]


def test_serves_page_tileset_list_data_and_cesium(server) -> None:
    status, headers, page = _request(server, "/")
    assert status == 200 and b"/viewer/cim-view.js" in page and headers["Content-Type"].startswith("text/html")
    assert b"Cesium3DTileset.fromUrl" in _request(server, "/viewer/cim-view.js")[2]
    status, _, body = _request(server, "/tilesets.json")
    assert json.loads(body) == ["3dtiles/pointcloud/tileset.json", "buildings/tileset.json"]
    assert b"0_0/tileset.json" in _request(server, "/data/3dtiles/pointcloud/tileset.json?v=1")[2]
    status, headers, body = _request(server, "/data/buildings/a%20b.glb")
    assert (status, headers["Content-Type"], body) == (200, "model/gltf-binary", b"glTF\x02\x00\x00\x00")
    assert _request(server, "/cesium/Cesium.js")[2] == b"// stand-in build"
    assert _request(server, "/data/inside.json")[0] == 200  # a link that stays inside the folder is fine
    status, headers, body = _request(server, "/data/buildings/tileset.json", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == "12"


@pytest.mark.parametrize("path", [
    "/data/", "/data/buildings/", "/data/3dtiles", "/cesium/", "/viewer/",          # no directory listings
    "/data/passwd", "/data/secret.txt", "/data/up/secret.txt",                     # links out of the folder
    "/data/../secret.txt", "/data/%2e%2e/secret.txt", "/data/..%2fsecret.txt", "/cesium/../out/cim.log",
    "/data/cim.log", "/data/log-link", "/data/.cim/state.json", "/data/.env", "/data/%2ecim/state.json",
    "/data/buildings/%00tileset.json", "/nowhere", "//etc/passwd", "/data//etc/passwd",
])
def test_listings_links_out_and_hidden_files_are_not_found(server, path: str) -> None:
    status, _, body = _request(server, path)
    assert status == 404, (path, body[:200])
    assert b"root:" not in body and b"outside the folder" not in body and b"Traceback" not in body


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "", "10.0.0.1"])
def test_a_foreign_host_header_is_forbidden(server, host: str) -> None:
    assert _request(server, "/tilesets.json", host=host)[0] == 403
    assert _request(server, "/data/buildings/tileset.json", host=host)[0] == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_loopback_host_headers_with_and_without_the_port_are_served(server, host: str) -> None:
    assert _request(server, "/tilesets.json", host=host)[0] == 200
    assert _request(server, "/tilesets.json", host=f"{host}:{server[1]}")[0] == 200
    assert _request(server, "/tilesets.json", host=f"{host}:{server[1] + 1}")[0] == 403


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
def test_only_get_and_head(server, method: str) -> None:
    status, headers, _ = _request(server, "/data/buildings/tileset.json", method=method)
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_allowed_hosts_for_a_network_address_and_for_every_address() -> None:
    assert allowed_hosts("192.168.1.5", 80) >= {"192.168.1.5", "192.168.1.5:80", "localhost:80"}
    assert "[fe80::1]:8" in allowed_hosts("fe80::1", 8)
    assert allowed_hosts("0.0.0.0", 80) is None


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CimError, match="not a folder"):
        make_server(tmp_path / "nope", cesium=tmp_path)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = make_server(tmp_path, port=0, cesium=tmp_path)
    try:
        with pytest.raises(CimError, match=f"cannot serve on 127.0.0.1:{first.server_address[1]}"):
            make_server(tmp_path, port=first.server_address[1], cesium=tmp_path)
    finally:
        first.server_close()


def test_cesium_ships_with_cim_and_a_bad_override_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CIM_CESIUM_DIR", raising=False)
    shipped = find_cesium()
    assert (shipped / "Cesium.js").stat().st_size > 1_000_000
    assert "site-packages" in str(shipped) or shipped.is_relative_to(Path(__file__).resolve().parents[1] / "cim")
    monkeypatch.setenv("CIM_CESIUM_DIR", os.fspath(tmp_path))
    with pytest.raises(CimError, match=f"{tmp_path}: no Cesium.js.*CIM_CESIUM_DIR"):
        find_cesium()


def test_cli_serves_warns_for_a_network_address_and_names_a_missing_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "tileset.json").write_text('{"root": {}}')
    cmd = [sys.executable, "-m", "cim.cli", "view", str(tmp_path / "t"), "--port", "0", "--host", "0.0.0.0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline()
        assert line.startswith("1 tileset(s); open http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].strip(" /\n"))
        assert _request(("127.0.0.1", port), "/tilesets.json", host="any.example")[2] == b'["tileset.json"]'
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "warning: serving" in err and "to every machine that can reach 0.0.0.0" in err
    assert "any Host header accepted" in err
    res = subprocess.run([sys.executable, "-m", "cim.cli", "view", str(tmp_path / "nope")], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 2 and "nope: not a folder" in " ".join((res.stderr + res.stdout).split())
    assert "Traceback" not in res.stderr



def test_served_from_an_installed_copy_without_the_source_tree(tmp_path: Path) -> None:
    """The package alone (as pip installs it, here behind a symlinked site folder) serves the page, CesiumJS with
    its workers and Marzipano; nothing comes from tests/js or the checkout."""
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "cim", tmp_path / "site" / "cim", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "link").symlink_to(tmp_path / "site")
    (tmp_path / "out").mkdir()
    script = (
        "import threading, urllib.request, pathlib, cim.viewer as v\n"
        "assert str(v.find_cesium()).startswith(%r), v.find_cesium()\n"
        "s = v.make_server(pathlib.Path('out'), port=0)\n"
        "threading.Thread(target=s.serve_forever, daemon=True).start()\n"
        "for p in ['/', '/viewer/cim-view.js', '/cesium/Cesium.js', '/cesium/Workers/createVerticesFromHeightmap.js',"
        " '/cesium/Assets/approximateTerrainHeights.json', '/viewer/marzipano/marzipano.js']:\n"
        "    r = urllib.request.urlopen(s.url[:-1] + p)\n"
        "    print(p, r.status, len(r.read()))\n"
    ) % str((tmp_path / "site").resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CIM_CESIUM_DIR")}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": str(tmp_path / "link")})
    assert res.returncode == 0, res.stderr[-2000:]
    sizes = dict(line.rsplit(" ", 2)[0::2] for line in res.stdout.splitlines())
    assert len(sizes) == 6 and all(int(n) > 1000 for n in sizes.values()), res.stdout
    assert int(sizes["/cesium/Cesium.js"]) > 1_000_000


def test_panorama_markers_only_for_tiles_inside_the_folder(tmp_path: Path) -> None:
    """One marker per panorama whose Marzipano tiles are in the folder, looking along its grid heading."""
    import math

    from cim.camera import Pose
    from cim.panoramas.georef import Panorama
    from cim.viewer import panorama_markers

    out = tmp_path / "out"

    def pano(name: str, heading: float, tiles: str) -> dict:
        q = tuple(float(v) for v in Pose.from_angles([0, 0, 0], heading, 0.0, 0.0).quaternion)
        return Panorama(name, 0.0, "2026-05-12T08:00:00Z", (410900.0, 5479800.0, 240.0), "EPSG:25832+7837", 7.77,
                        49.46, 288.0, q, q, products={"tiles": tiles}).to_dict()

    for name, yaw_zero in (("a", "grid north"), ("b", "panorama centre (camera forward)")):
        (out / "drive" / name).mkdir(parents=True)
        config = {"faceSize": 512, "levels": [{"tileSize": 256, "size": 256, "fallbackOnly": True}],
                  "tileUrl": "{z}/{f}/{y}/{x}.jpg", "previewUrl": "preview.jpg", "cubeMapPreviewFaceOrder": "bdflru",
                  "yawZero": yaw_zero}
        (out / "drive" / name / "marzipano.json").write_text(json.dumps(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "marzipano.json").write_text((out / "drive" / "a" / "marzipano.json").read_text())
    index = {"panoramas": [pano("a", 30.0, "a/marzipano.json"), pano("b", 120.0, "b/marzipano.json"),
                           pano("gone", 0.0, "gone/marzipano.json"),
                           pano("abs", 0.0, str(elsewhere / "marzipano.json")),
                           pano("up", 0.0, "../../elsewhere/marzipano.json")]}
    (out / "drive" / "panoramas.json").write_text(json.dumps(index))
    (elsewhere / "panoramas.json").write_text(json.dumps({"panoramas": [pano("x", 0.0, "marzipano.json")]}))
    (out / "linked").mkdir()
    (out / "linked" / "panoramas.json").symlink_to(elsewhere / "panoramas.json")  # an index out of the folder
    (out / "broken").mkdir()
    (out / "broken" / "panoramas.json").write_text("{")
    markers = panorama_markers(out)
    assert [m["name"] for m in markers] == ["a", "b"]
    assert markers[0]["tiles"] == "drive/a/" and markers[0]["marzipano"]["faceSize"] == 512
    assert math.isclose(markers[0]["yaw"], math.radians(30.0), abs_tol=1e-9)  # north-up tiles: the heading
    assert markers[1]["yaw"] == 0.0  # tiles whose yaw 0 is the camera's forward
    assert math.isclose(markers[1]["heading"], 120.0, abs_tol=1e-9)
