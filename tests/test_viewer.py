"""`cim view` serves the page, the root tilesets of an output folder, their files and CesiumJS."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest

from cim.errors import CimError
from cim.viewer import make_server, root_tilesets


def _folder(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "3dtiles" / "pointcloud" / "0_0").mkdir(parents=True)
    (out / "3dtiles" / "pointcloud" / "tileset.json").write_text('{"root": {"content": {"uri": "0_0/tileset.json"}}}')
    (out / "3dtiles" / "pointcloud" / "0_0" / "tileset.json").write_text('{"root": {}}')
    (out / "buildings").mkdir()
    (out / "buildings" / "tileset.json").write_text('{"root": {}}')
    return out


def test_root_tilesets_skip_the_ones_referenced_by_others(tmp_path: Path) -> None:
    assert root_tilesets(_folder(tmp_path)) == ["3dtiles/pointcloud/tileset.json", "buildings/tileset.json"]


def test_server_serves_page_tileset_list_data_and_cesium(tmp_path: Path) -> None:
    cesium = tmp_path / "Cesium"
    cesium.mkdir()
    (cesium / "Cesium.js").write_text("// stand-in build")
    server = make_server(_folder(tmp_path), port=0, cesium=cesium)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = urllib.request.urlopen(base + "/").read().decode()
        assert "Cesium3DTileset.fromUrl" in page
        assert json.loads(urllib.request.urlopen(base + "/tilesets.json").read())[0] == "3dtiles/pointcloud/tileset.json"
        assert b"0_0/tileset.json" in urllib.request.urlopen(base + "/data/3dtiles/pointcloud/tileset.json").read()
        assert urllib.request.urlopen(base + "/cesium/Cesium.js").read() == b"// stand-in build"
    finally:
        server.shutdown()
        server.server_close()


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CimError, match="not a folder"):
        make_server(tmp_path / "nope", cesium=tmp_path)
