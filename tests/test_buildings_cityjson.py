"""CityJSON 2.0 / CityJSONSeq writer and reader: schema-valid, round trip, CRS, several LoDs, cjio."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource

from cim.buildings.validity import check_solid
from cim.cityjson import (
    BuildingGeometry,
    read_cityjson,
    read_reference_system,
    write_cityjson,
    write_cityjsonseq,
)

SCHEMAS = Path(__file__).parent / "schemas" / "cityjson-2.0"


def _validator(name: str) -> Draft7Validator:
    resources = []
    for p in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(p.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / name).read_text())
    return Draft7Validator(schema, registry=registry)


def schema_errors(doc: dict, name: str = "cityjson.schema.json") -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator(name).iter_errors(doc)]


def gable_house(bid: str, x0: float = 0.0, y0: float = 0.0, w: float = 10.0, d: float = 8.0,
                zg: float = 100.0, ze: float = 106.0, zr: float = 109.0) -> BuildingGeometry:
    """Gable roof house, ridge along x: 2 roof quads, 2 gable pentagons, 2 walls, ground."""
    x1, y1, ym = x0 + w, y0 + d, y0 + d / 2
    faces = [
        np.array([(x0, y0, zg), (x0, y1, zg), (x1, y1, zg), (x1, y0, zg)]),  # ground, seen from below CCW
        np.array([(x0, y0, zg), (x1, y0, zg), (x1, y0, ze), (x0, y0, ze)]),  # south wall
        np.array([(x1, y0, zg), (x1, y1, zg), (x1, y1, ze), (x1, ym, zr), (x1, y0, ze)]),  # east gable
        np.array([(x1, y1, zg), (x0, y1, zg), (x0, y1, ze), (x1, y1, ze)]),  # north wall
        np.array([(x0, y1, zg), (x0, y0, zg), (x0, y0, ze), (x0, ym, zr), (x0, y1, ze)]),  # west gable
        np.array([(x0, y0, ze), (x1, y0, ze), (x1, ym, zr), (x0, ym, zr)]),  # south roof
        np.array([(x0, ym, zr), (x1, ym, zr), (x1, y1, ze), (x0, y1, ze)]),  # north roof
    ]
    sem = ["GroundSurface", "WallSurface", "WallSurface", "WallSurface", "WallSurface", "RoofSurface",
           "RoofSurface"]
    return BuildingGeometry(bid, faces, sem, {"roof_type": 3100, "h_ground": zg}, lod="2.2")


def block(bid: str, x0: float, y0: float, w: float, d: float, zg: float, zt: float) -> BuildingGeometry:
    x1, y1 = x0 + w, y0 + d
    ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    faces = [np.array([(x, y, zg) for x, y in ring[::-1]]), np.array([(x, y, zt) for x, y in ring])]
    sem = ["GroundSurface", "RoofSurface"]
    for i in range(4):
        (xa, ya), (xb, yb) = ring[i], ring[(i + 1) % 4]
        faces.append(np.array([(xa, ya, zg), (xb, yb, zg), (xb, yb, zt), (xa, ya, zt)]))
        sem.append("WallSurface")
    return BuildingGeometry(bid, faces, sem, {"h_roof_70p": zt}, lod="1.2")


def test_fixture_solids_are_valid():
    assert check_solid(gable_house("a")).valid
    assert check_solid(block("b", 0, 0, 5, 5, 0, 3)).valid


def test_write_cityjson_validates_and_round_trips(tmp_path):
    houses = [gable_house("h1", 410800.0, 5479700.0), block("h1", 410800.0, 5479700.0, 10, 8, 100, 107.5),
              gable_house("h2", 410810.0, 5479700.0)]  # h2 shares a wall with h1
    out = write_cityjson(tmp_path / "b.city.json", houses, "EPSG:25832+7837", metadata={"title": "test"})
    doc = json.loads(out.read_text())
    assert schema_errors(doc) == []
    assert doc["version"] == "2.0"
    assert doc["metadata"]["referenceSystem"] == "https://www.opengis.net/def/crs/EPSG/0/25832"
    assert doc["metadata"]["+verticalReferenceSystem"] == "https://www.opengis.net/def/crs/EPSG/0/7837"
    assert doc["metadata"]["title"] == "test"
    assert all(isinstance(v, int) for vert in doc["vertices"] for v in vert)
    # h1 has two LoDs in one city object
    assert [g["lod"] for g in doc["CityObjects"]["h1"]["geometry"]] == ["2.2", "1.2"]
    # shared wall vertices of h1 and h2 are stored once
    assert len(doc["vertices"]) == len({tuple(v) for v in doc["vertices"]})
    crs = read_reference_system(out)
    assert crs.sub_crs_list[0].to_epsg() == 25832 and crs.sub_crs_list[1].to_epsg() == 7837
    back = read_cityjson(out)
    assert [(b.id, b.lod) for b in back] == [("h1", "2.2"), ("h1", "1.2"), ("h2", "2.2")]
    for orig, got in zip(houses, back):
        assert got.semantics == orig.semantics
        for fo, fg in zip(orig.faces, got.faces):
            np.testing.assert_allclose(fg, fo, atol=0.0006)
        assert check_solid(got).valid
    assert back[0].attributes["roof_type"] == 3100
    assert back[1].attributes["h_roof_70p"] == 107.5  # attributes of both LoDs are merged


def test_write_is_deterministic(tmp_path):
    houses = [gable_house("h1"), block("h2", 20, 0, 5, 5, 100, 104)]
    a = write_cityjson(tmp_path / "a.city.json", houses, "EPSG:7415").read_bytes()
    b = write_cityjson(tmp_path / "b.city.json", houses, "EPSG:7415").read_bytes()
    assert a == b
    assert json.loads(a)["metadata"]["referenceSystem"] == "https://www.opengis.net/def/crs/EPSG/0/7415"


def test_cityjsonseq_validates_and_round_trips(tmp_path):
    houses = [gable_house(f"h{i}", 410800.0 + 12 * i, 5479700.0) for i in range(5)]
    out = write_cityjsonseq(tmp_path / "b.city.jsonl", iter(houses), "EPSG:25832+7837")
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    header = json.loads(lines[0])
    assert header["CityObjects"] == {} and header["vertices"] == []
    assert schema_errors(header) == []
    for line in lines[1:]:
        feature = json.loads(line)
        assert schema_errors(feature, "cityjsonfeature.schema.json") == []
    back = read_cityjson(out)
    assert [b.id for b in back] == [h.id for h in houses]
    np.testing.assert_allclose(back[3].faces[2], houses[3].faces[2], atol=0.0006)


def test_cityjsonseq_rejects_scattered_ids(tmp_path):
    houses = [gable_house("a"), block("b", 20, 0, 5, 5, 0, 3), block("a", 0, 0, 10, 8, 100, 106)]
    with pytest.raises(ValueError, match="not consecutive"):
        write_cityjsonseq(tmp_path / "x.city.jsonl", houses, "EPSG:7415")
    assert not (tmp_path / "x.city.jsonl").exists()


def test_quantisation_drops_collapsed_vertices(tmp_path):
    g = block("a", 0, 0, 10, 8, 0, 3)
    g.faces[1] = np.insert(g.faces[1], 1, g.faces[1][0] + [0.0001, 0, 0], axis=0)  # sub-mm vertex on the roof
    doc = json.loads(write_cityjson(tmp_path / "a.city.json", [g], "EPSG:7415").read_text())
    roof = doc["CityObjects"]["a"]["geometry"][0]["boundaries"][0][1][0]
    assert len(roof) == 4


def test_expected_delft_file_reads(shared_data):
    path = shared_data / "delft" / "expected" / "testarea.v2.0.city.json"
    buildings = read_cityjson(path)
    assert len({b.id for b in buildings}) == 160
    assert read_reference_system(path).to_epsg() == 7415


def test_bad_input_names_file(tmp_path):
    from cim.errors import InputError

    p = tmp_path / "bad.city.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="bad.city.json"):
        read_cityjson(p)


@pytest.mark.skipif(shutil.which("cjio") is None and not Path(".venv/bin/cjio").exists(), reason="cjio not installed")
def test_loads_in_cjio(tmp_path):
    out = write_cityjson(tmp_path / "b.city.json", [gable_house("h1"), block("h2", 20, 0, 5, 5, 100, 104)],
                         "EPSG:7415")
    cjio = shutil.which("cjio") or ".venv/bin/cjio"
    res = subprocess.run([cjio, str(out), "info"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Building" in res.stdout


def test_surface_attributes_round_trip(tmp_path):
    g = gable_house("h")
    g.surface_attributes = [{} for _ in g.faces]
    g.surface_attributes[5] = {"slope": 31.0, "azimuth": 180.0}
    g.surface_attributes[6] = {"slope": 31.0, "azimuth": 0.0}
    doc = json.loads(write_cityjson(tmp_path / "s.city.json", [g], "EPSG:7415").read_text())
    assert schema_errors(doc) == []
    surfaces = doc["CityObjects"]["h"]["geometry"][0]["semantics"]["surfaces"]
    assert {"type": "RoofSurface", "slope": 31.0, "azimuth": 180.0} in surfaces
    back = read_cityjson(tmp_path / "s.city.json")[0]
    assert back.surface_attributes[5] == {"slope": 31.0, "azimuth": 180.0}
    assert back.semantics == g.semantics
