"""CityGML 2.0 writer (AdV LoD2 profile) and reader: schema-valid, the same solids as the CityJSON the same job writes,
the AdV srsName and id rules, the STAC entry, the reader on the two official AdV samples (CityGML 1.0 and 2.0), and
``cim compare-buildings``: a file against itself (no difference), against a copy with known changes (those changes
reported), the AdV samples against themselves, a CRS mismatch (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
from lxml import etree

from cim.buildings.evaluate import footprint_of
from cim.buildings.model import BuildingModel
from cim.buildings.run import models_from_cityjson
from cim.buildings.validity import signed_volume
from cim.citygml.adv import crs_from_srs_name, function_code, gml_id, srs_name
from cim.citygml.compare import compare
from cim.citygml.reader import read_citygml, read_crs
from cim.citygml.writer import write_citygml
from cim.errors import CrsError, InputError
from helpers import cim_cli
from test_buildings_cityjson import block, gable_house

SCHEMAS = Path(__file__).parent / "schemas" / "citygml-2.0" / "citygml" / "2.0"
NS = {"core": "http://www.opengis.net/citygml/2.0", "bldg": "http://www.opengis.net/citygml/building/2.0",
      "gen": "http://www.opengis.net/citygml/generics/2.0", "gml": "http://www.opengis.net/gml",
      "xlink": "http://www.w3.org/1999/xlink"}
NS1 = {**NS, "core": "http://www.opengis.net/citygml/1.0", "bldg": "http://www.opengis.net/citygml/building/1.0"}
NRW = "LoD2_32_354_5652_1_NW.gml"
DELFT_AREA = (84900.0, 447500.0, 85000.0, 447600.0)  # 100 m x 100 m of the Delft block: one tile


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    """CityGML 2.0 building + generics, loaded offline from the repo's copy (no network: lxml's parser default)."""
    imports = "".join(f'<xs:import namespace="{NS[p]}" schemaLocation="{(SCHEMAS / f).as_uri()}"/>'
                      for p, f in (("bldg", "building.xsd"), ("gen", "generics.xsd")))
    wrapper = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:cim:test">{imports}' \
              f'</xs:schema>'
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), etree.XMLParser(no_network=True)))


def schema_errors(schema: etree.XMLSchema, path: Path) -> list[str]:
    ok = schema.validate(etree.parse(str(path), etree.XMLParser(no_network=True)))
    return [] if ok else [f"{e.line}: {e.message}" for e in schema.error_log]


def _house(bid: str, x0: float = 0.0, **attrs) -> BuildingModel:
    g = gable_house(bid, x0=x0)
    return BuildingModel(bid, footprint_of(g), {"roof_type": 3100, "status": "lod22", "rmse_lod22": 0.12,
                                                "point_count": 812, "valid_lod22": True, **attrs},
                         lod22=g, lod12=block(bid, x0, 0.0, 10.0, 8.0, 100.0, 107.5))


# ------------------------------------------------------------------------------------------------ profile rules


def test_srs_names_follow_the_adv_and_epsg_rules():
    assert srs_name(pyproj.CRS("EPSG:25832+7837")) == "urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH"
    assert srs_name(pyproj.CRS("EPSG:25833+7837")) == "urn:adv:crs:ETRS89_UTM33*DE_DHHN2016_NH"
    assert srs_name(pyproj.CRS("EPSG:7415")) == "urn:ogc:def:crs:EPSG::7415"
    assert srs_name(pyproj.CRS("EPSG:32631+5709")) == "urn:ogc:def:crs,crs:EPSG::32631,crs:EPSG::5709"
    with pytest.raises(CrsError, match="EPSG"):
        srs_name(pyproj.CRS("+proj=tmerc +lon_0=7 +ellps=GRS80 +units=m"))
    for name, code in (("urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH*GCG2016", "EPSG:25832+7837"),
                       ("urn:ogc:def:crs,crs:EPSG::28992,crs:EPSG::5709", "EPSG:7415"),
                       ("EPSG:25832", "EPSG:25832")):
        assert crs_from_srs_name(name).equals(pyproj.CRS(code)), name
    with pytest.raises(CrsError, match="AdV srsName"):
        crs_from_srs_name("urn:adv:crs:GK3*DE_DHHN92_NH")


def test_ids_and_function_codes():
    assert gml_id("DENW37AL1000joGl") == "DENW37AL1000joGl"
    assert gml_id("NL.IMBAG.Pand.0503100000012345") == "NL.IMBAG.Pand.0503100000012345"
    assert gml_id("b12~2") == "b12_2" and gml_id("0503") == "ID_0503"
    assert function_code({"src_gebaeudefunktion": 2010.0}) == "31001_2010"
    assert function_code({"src_function": "31001_1000"}) == "31001_1000"
    assert function_code({"src_GFK": "31001_2463"}) == "31001_2463"  # NRW's ALKIS shape export
    assert function_code({"status": "lod22"}) is None


# ------------------------------------------------------------------------------------------------------ writer


def test_written_file_is_schema_valid_and_reads_back(tmp_path, schema):
    no_points = BuildingModel("c", footprint_of(gable_house("c", x0=40)), {"status": "no_points", "roof_type": None})
    no_points.lod0 = gable_house("c", x0=40)  # any faces do: only the ground ones are read back below
    no_points.lod0.faces, no_points.lod0.semantics = no_points.lod0.faces[:1], ["GroundSurface"]
    models = [_house("DEKL0001", src_gebaeudefunktion=1000, src_note="a\x01b"), _house("0002", x0=20.0), _house("b~3", x0=60.0),
              _house("b_3", x0=80.0), no_points]
    path = write_citygml(tmp_path / "b.gml", models, pyproj.CRS("EPSG:25832+7837"), creation_date="2024-05-01")
    assert schema_errors(schema, path) == []
    tree = etree.parse(str(path))
    assert tree.xpath("/core:CityModel/gml:boundedBy/gml:Envelope/@srsName", namespaces=NS) == [
        "urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH"]
    assert tree.xpath("//bldg:Building/@gml:id", namespaces=NS) == ["DEKL0001", "ID_0002", "b_3", "b_3_2", "c"]
    assert tree.xpath("//bldg:Building/gml:name/text()", namespaces=NS) == ["0002", "b~3", "b_3"]
    ids = tree.xpath("//gml:Polygon/@gml:id", namespaces=NS)
    assert len(ids) == len(set(ids))
    hrefs = tree.xpath("//bldg:lod2Solid//gml:surfaceMember/@xlink:href", namespaces=NS)
    boundary = tree.xpath("//bldg:boundedBy/*/bldg:lod2MultiSurface//gml:Polygon/@gml:id", namespaces=NS)
    assert sorted(h[1:] for h in hrefs) == sorted(boundary) and len(hrefs) == 4 * 7
    assert tree.xpath("//bldg:Building[@gml:id='DEKL0001']/bldg:function/text()", namespaces=NS) == ["31001_1000"]
    assert tree.xpath("//bldg:measuredHeight/@uom", namespaces=NS) == ["urn:adv:uom:m"] * 4
    assert tree.xpath("//bldg:Building[@gml:id='c']/bldg:lod0FootPrint", namespaces=NS)

    back = read_citygml(path)
    assert back.version == "2.0" and back.crs.equals(pyproj.CRS("EPSG:25832+7837"))
    b = back.buildings[0]
    assert (b.id, b.roof_type, b.measured_height, b.function) == ("DEKL0001", 3100, 9.0, "31001_1000")
    assert b.attributes == {"point_count": 812, "rmse_lod22": 0.12, "status": "lod22", "valid_lod22": "true",
                            "src_gebaeudefunktion": 1000, "src_note": "ab"}
    g = gable_house("x")
    assert signed_volume(b.solids["lod2"]) == pytest.approx(signed_volume(g.faces)) == pytest.approx(10 * 8 * 7.5)
    assert signed_volume(b.solids["lod1"]) == pytest.approx(10 * 8 * 7.5)
    assert {k: len(v) for k, v in b.surfaces.items()} == {"GroundSurface": 1, "WallSurface": 4, "RoofSurface": 2}
    assert back.buildings[-1].roof_type is None and back.buildings[-1].measured_height is None


def test_written_file_is_deterministic_and_atomic(tmp_path):
    models = [_house("a"), _house("b", x0=20.0)]
    a = write_citygml(tmp_path / "a.gml", models, pyproj.CRS("EPSG:7415")).read_bytes()
    b = write_citygml(tmp_path / "b.gml", iter(models), pyproj.CRS("EPSG:7415"),
                      bounds=(np.array([0.0, 0.0, 100.0]), np.array([30.0, 8.0, 109.0]))).read_bytes()
    assert a == b
    with pytest.raises(CrsError):
        write_citygml(tmp_path / "c.gml", models, pyproj.CRS("+proj=tmerc +lon_0=7 +ellps=GRS80 +units=m"))

    def failing():
        yield models[0]
        raise RuntimeError("model source broke")

    with pytest.raises(RuntimeError):
        write_citygml(tmp_path / "a.gml", failing(), pyproj.CRS("EPSG:7415"), bounds=(np.zeros(3), np.ones(3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gml", "b.gml"]  # no half file, no temporary left
    assert (tmp_path / "a.gml").read_bytes() == a


# ---------------------------------------------------------------------------------------------- the Delft job


@pytest.fixture(scope="module")
def delft_job(repo_data, tmp_path_factory):
    """A one-tile buildings job on 100 m x 100 m of the Delft demo data writing CityJSON and CityGML."""
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    out = tmp_path_factory.mktemp("citygml_delft")
    doc = {"job": {"name": "delft", "output": str(out), "crs": "EPSG:7415", "area": list(DELFT_AREA)},
           "stages": [{"type": "read.las", "files": [str(repo_data / "delft" / "ahn3_cropped_*.laz")]},
                      {"type": "tile", "size": 100.0, "buffer": 20.0},
                      {"type": "buildings.lod2", "footprints": str(repo_data / "delft" / "bgt_pand.sqlite")},
                      {"type": "write.cityjson", "sequence": False},
                      {"type": "write.citygml"}]}
    result = run_job(parse_job(doc, out / "job.toml"), scheduler="threads", workers=1)
    assert result.report.ok
    return out


def test_delft_citygml_validates_and_matches_the_cityjson(delft_job, schema):
    path = delft_job / "buildings.gml"
    assert schema_errors(schema, path) == []
    models = {m.id: m for m in models_from_cityjson(delft_job / "buildings.city.json")}
    back = read_citygml(path)
    assert back.crs.equals(pyproj.CRS("EPSG:7415")) and back.srs_name == "urn:ogc:def:crs:EPSG::7415"
    assert [b.name for b in back.buildings] == sorted(models)  # Delft's numeric ids: gml:id ID_<id>, gml:name <id>
    assert [b.id for b in back.buildings] == [f"ID_{k}" for k in sorted(models)]
    assert len(models) >= 10 and sum(m.lod22 is not None for m in models.values()) >= 10
    for b in back.buildings:
        m = models[b.name]
        assert b.roof_type == m.attributes["roof_type"]
        for lod, geom in (("lod2", m.lod22), ("lod1", m.lod12)):
            if geom is None:
                assert lod not in b.solids
                continue
            faces = b.solids[lod]
            assert len(faces) == len(geom.faces), (b.id, lod)
            assert signed_volume(faces) == pytest.approx(signed_volume(geom.faces), rel=1e-4, abs=0.05)
            ours, theirs = np.concatenate(faces), geom.vertices
            assert np.abs(np.sort(ours, axis=0) - np.sort(theirs, axis=0)).max() <= 1.5e-3, (b.id, lod)
        best = m.lod22 or m.lod12
        z = best.vertices[:, 2]
        assert b.measured_height == pytest.approx(z.max() - z.min(), abs=2e-3)
        if m.lod22 is not None:
            for kind in ("RoofSurface", "WallSurface", "GroundSurface"):
                want = [f for f, s in zip(m.lod22.faces, m.lod22.semantics) if s == kind]
                got = b.surfaces.get(kind, [])
                assert len(got) == len(want), (b.id, kind)
                assert sum(_area(f) for f in got) == pytest.approx(sum(_area(f) for f in want), rel=1e-4, abs=0.01)
        assert b.attributes["status"] == m.attributes["status"]
        assert b.attributes["rmse_lod12"] == m.attributes["rmse_lod12"]


def test_delft_citygml_is_in_the_stac_catalog(delft_job):
    catalog = json.loads((delft_job / "stac" / "catalog.json").read_text())
    items = [json.loads((delft_job / "stac" / link["href"]).read_text()) for link in catalog["links"]
             if link["rel"] == "item"]
    gml = [i for i in items if i["assets"]["data"]["href"].endswith("buildings.gml")]
    assert len(gml) == 1
    item = gml[0]
    assert item["assets"]["data"]["type"] == "application/gml+xml"
    assert item["properties"]["proj:code"] == "EPSG:7415" and len(item["properties"]["proj:bbox"]) == 6
    w, s, e, n = item["bbox"]
    assert 4.3 < w < e < 4.4 and 51.9 < s < n < 52.1  # Delft


def _area(face: np.ndarray) -> float:
    """Area of a planar 3D polygon (Newell)."""
    return float(np.linalg.norm(np.cross(face, np.roll(face, -1, axis=0)).sum(axis=0)) / 2)


# ------------------------------------------------------------------------------------------------------ reader


@pytest.mark.parametrize("name, version, ns", [(NRW, "1.0", NS1),
                                               ("DEBY_LOD2_4959457.gml", "2.0", NS)])
def test_reader_on_the_adv_samples(shared_data, name, version, ns):
    path = shared_data / "citygml-adv" / name
    data = read_citygml(path)
    tree = etree.parse(str(path))
    assert data.version == version
    assert [b.id for b in data.buildings] == tree.xpath("/core:CityModel/core:cityObjectMember/bldg:Building/@gml:id",
                                                        namespaces=ns)
    for kind in ("RoofSurface", "WallSurface", "GroundSurface", "ClosureSurface"):
        want = int(tree.xpath(f"count(//bldg:{kind}//gml:Polygon)", namespaces=ns))
        assert sum(len(b.surfaces.get(kind, [])) for b in data.buildings) == want, kind
    for b in data.buildings:
        el = tree.xpath(f"//bldg:Building[@gml:id='{b.id}']", namespaces=ns)[0]
        rt = el.xpath("bldg:roofType/text()", namespaces=ns)
        if rt:
            assert b.roof_type == int(rt[0])
        mh = el.xpath("bldg:measuredHeight/text()", namespaces=ns)
        if mh:
            assert b.measured_height == float(mh[0])
        assert b.function == (el.xpath("bldg:function/text()", namespaces=ns) or [None])[0]
        assert len(b.parts) == int(el.xpath("count(bldg:consistsOfBuildingPart)", namespaces=ns))
        assert len(b.solids.get("lod2", [])) == int(el.xpath("count(bldg:lod2Solid//gml:surfaceMember)",
                                                             namespaces=ns))
        for polys in b.surfaces.values():
            assert all(p.ndim == 2 and p.shape[1] == 3 and len(p) >= 3 for p in polys)
    first = tree.xpath("(//gml:Polygon//gml:posList)[1]/text()", namespaces=ns)[0].split()
    polys = [p for b in data.buildings for s in ("WallSurface", "RoofSurface", "GroundSurface")
             for p in b.surfaces.get(s, [])]
    assert any(np.allclose(p[0], np.array(first[:3], float)) for p in polys)


def test_reader_crs_and_errors(shared_data, tmp_path):
    nrw = shared_data / "citygml-adv" / "LoD2_32_354_5652_1_NW.gml"
    assert read_crs(nrw).equals(pyproj.CRS("EPSG:25832+7837"))
    assert read_crs(shared_data / "citygml-adv" / "DEBY_LOD2_4959457.gml").equals(pyproj.CRS("EPSG:25832"))
    bad = tmp_path / "bad.gml"
    bad.write_text("<core:CityModel xmlns:core='http://www.opengis.net/citygml/2.0'><unclosed>")
    with pytest.raises(InputError, match="bad.gml"):
        read_citygml(bad)
    other = tmp_path / "other.xml"
    other.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    with pytest.raises(InputError, match="not CityGML"):
        read_citygml(other)


# ---------------------------------------------------------------------------------------------- compare-buildings



def perturbed_copy(src: Path, dst: Path, ns: dict[str, str], *, dz: float = 0.0, dh: float = 0.0,
                   roof_type: tuple[str, str] | None = None) -> Path:
    """``src`` with every z raised by ``dz``, every measuredHeight by ``dh`` and one building's roof type changed
    (``(gml:id, code)``), edited with lxml independently of cim's writer."""
    tree = etree.parse(str(src))
    for el in tree.xpath("//gml:posList | //gml:lowerCorner | //gml:upperCorner", namespaces=ns):
        xyz = np.array(el.text.split(), float).reshape(-1, 3)
        xyz[:, 2] += dz
        el.text = " ".join(repr(v) for v in np.round(xyz, 4).ravel().tolist())
    for el in tree.xpath("//bldg:measuredHeight", namespaces=ns):
        el.text = repr(round(float(el.text) + dh, 4))
    if roof_type:
        el = tree.xpath(f"//bldg:Building[@gml:id='{roof_type[0]}']/bldg:roofType", namespaces=ns)[0]
        el.text = roof_type[1]
    tree.write(str(dst), xml_declaration=True, encoding="UTF-8")
    return dst


def test_delft_cityjson_against_its_citygml_and_a_shifted_copy(delft_job, tmp_path):
    gml, cj = delft_job / "buildings.gml", delft_job / "buildings.city.json"
    same = compare(cj, gml)
    n = same["ours"]["buildings"]
    assert n >= 10 and same["official"]["buildings"] == n and same["overall"]["matched"] == n
    assert same["unmatched_ours"] == same["unmatched_official"] == []
    o = same["overall"]
    assert o["iou_mean"] == pytest.approx(1.0, abs=1e-3) and o["roof_type_agreement"] == 1.0
    assert abs(o["measured_height_diff"]["rmse"]) <= 0.002 and o["roof"]["rmse"] <= 0.002
    assert o["roof"]["samples"] > 100 * n

    first = etree.parse(str(gml)).xpath("//bldg:Building[bldg:roofType][1]", namespaces=NS)[0]
    code = first.xpath("bldg:roofType/text()", namespaces=NS)[0]
    other = "3100" if code != "3100" else "1000"
    shifted = perturbed_copy(gml, tmp_path / "shifted.gml", NS, dz=0.5, dh=-0.3, roof_type=(
        first.get("{http://www.opengis.net/gml}id"), other))
    r = compare(gml, shifted)
    o = r["overall"]
    assert o["matched"] == n
    assert o["roof"]["median"] == pytest.approx(-0.5, abs=1e-3)  # ours minus official: official raised by 0.5
    assert o["roof"]["rmse"] == pytest.approx(0.5, abs=1e-3)
    assert o["roof"]["rmse_minus_median"] <= 1e-3 and o["roof"]["rmse_minus_building_median"] <= 1e-3
    assert o["measured_height_diff"]["median"] == pytest.approx(0.3, abs=1e-3)
    assert o["roof_type_compared"] - round(o["roof_type_agreement"] * o["roof_type_compared"]) == 1
    changed = [b for b in r["buildings"] if b["roof_type_agrees"] is False]
    assert [(b["official"], b["roof_type_ours"], b["roof_type_official"]) for b in changed] == [
        (first.get("{http://www.opengis.net/gml}id"), int(code), int(other))]
    assert all(b["roof"]["median"] == pytest.approx(-0.5, abs=1e-3) for b in r["buildings"] if b["roof"]["samples"])


def test_roof_difference_of_a_raised_ridge_is_the_analytic_one(tmp_path):
    """Gable roofs 10 m x 8 m, eaves 106 m, ridge 109 m against 110 m: the difference grows linearly from 0 at the
    eaves to -1 m at the ridge, so over the plan its median is -0.5 m, its RMSE sqrt(1/3) m, and sqrt(1/12) m once
    the median is removed; measuredHeight differs by -1 m; the roof type by neither."""
    crs = pyproj.CRS("EPSG:25832+7837")
    ours = write_citygml(tmp_path / "ours.gml", [_house("h")], crs)
    high = gable_house("h", zr=110.0)
    official = write_citygml(tmp_path / "official.gml", [BuildingModel("h", footprint_of(high), {"roof_type": 3100},
                                                                       lod22=high)], crs)
    r = compare(ours, official, spacing=0.1)
    b = r["buildings"][0]
    assert b["measured_height_diff"] == pytest.approx(-1.0) and b["roof_type_agrees"] is True
    assert b["roof"]["median"] == pytest.approx(-0.5, abs=0.02)
    assert b["roof"]["rmse"] == pytest.approx(np.sqrt(1 / 3), abs=0.02)
    assert b["roof"]["rmse_minus_median"] == pytest.approx(np.sqrt(1 / 12), abs=0.02)


def test_cim_models_of_the_synthetic_city_against_its_truth(synth_city, tmp_path):
    """The whole chain on generated data: cim's CityGML of the synthetic city against the true buildings (the
    generator's CityJSON with its roofType and measuredHeight)."""
    from cim.pipeline.execute import run_job
    from cim.pipeline.job import parse_job

    doc = {"job": {"name": "s", "output": str(tmp_path)},
           "stages": [{"type": "read.las", "files": [str(synth_city.als_laz)]},
                      {"type": "tile", "size": 200.0, "buffer": 40.0},
                      {"type": "buildings.lod2", "footprints": str(synth_city.footprints_gpkg)},
                      {"type": "write.citygml"}]}
    assert run_job(parse_job(doc, tmp_path / "job.toml"), scheduler="threads", workers=1).report.ok
    r = compare(tmp_path / "buildings.gml", synth_city.buildings_cityjson)
    truth = json.loads(synth_city.buildings_cityjson.read_text())["CityObjects"]
    o = r["overall"]
    print("synthetic city, cim vs truth:", json.dumps(o))
    assert o["matched"] == len(truth) and r["unmatched_ours"] == r["unmatched_official"] == []
    assert o["roof_type_compared"] == len(truth) and o["roof_type_agreement"] >= 0.9
    assert abs(o["roof"]["median"]) <= 0.05 and o["roof"]["rmse"] <= 0.15
    assert abs(o["measured_height_diff"]["median"]) <= 0.15
    assert {b["official"] for b in r["buildings"]} == set(truth)


def test_adv_sample_against_itself_via_the_cli(shared_data, tmp_path):
    nrw = shared_data / "citygml-adv" / NRW
    res = cim_cli("compare-buildings", str(nrw), str(nrw), "--out", str(tmp_path / "r.json"), timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    tree = etree.parse(str(nrw))
    n = int(tree.xpath("count(/*/*[local-name()='cityObjectMember']/*[local-name()='Building'])"))
    o = report["overall"]
    assert report["ours"]["buildings"] == n and o["matched"] == n and o["roof_type_agreement"] == 1.0
    assert o["roof"]["rmse"] == 0.0 and o["measured_height_diff"]["rmse"] == 0.0 and o["iou_mean"] == 1.0
    assert "matched" in res.stdout and "all" in res.stdout


def test_bavarian_sample_against_a_raised_copy(shared_data, tmp_path):
    deby = shared_data / "citygml-adv" / "DEBY_LOD2_4959457.gml"
    raised = perturbed_copy(deby, tmp_path / "raised.gml", NS, dz=-1.25)
    r = compare(deby, raised)
    assert r["overall"]["matched"] == 1
    assert r["overall"]["roof"]["median"] == pytest.approx(1.25, abs=1e-3)
    assert r["overall"]["roof"]["rmse_minus_median"] <= 1e-3
    assert r["buildings"][0]["measured_height_diff"] == 0.0  # the copy's measuredHeight was left as it was


def test_crs_mismatch_is_one_line_and_exit_2(delft_job, shared_data):
    res = cim_cli("compare-buildings", str(delft_job / "buildings.gml"), str(shared_data / "citygml-adv" / NRW),
                  timeout=120)
    assert res.returncode == 2
    assert "CRS mismatch" in res.stderr and "Traceback" not in res.stderr + res.stdout
    with pytest.raises(CrsError, match="Amersfoort"):
        compare(delft_job / "buildings.city.json", shared_data / "citygml-adv" / NRW)


def test_buildings_command_rejects_an_unknown_format(tmp_path, repo_data):
    res = cim_cli("buildings", str(repo_data / "delft" / "ahn3_cropped_1.laz"), "--out", str(tmp_path / "o"),
                  "--format", "obj", timeout=120)
    assert res.returncode == 2 and "--format must be cityjson or citygml" in res.stdout + res.stderr
    assert not (tmp_path / "o").exists()
