"""``cim compare-buildings``: a file against itself (no difference), against a copy with known changes (those changes
reported), the AdV samples against themselves, a CRS mismatch (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from cim.citygml.compare import compare
from cim.errors import CrsError
from helpers import cim_cli
from test_citygml import DELFT_AREA, NS, delft_job  # noqa: F401 - the module-scoped Delft job fixture

NRW = "LoD2_32_354_5652_1_NW.gml"


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


def test_delft_cityjson_against_its_citygml_and_a_shifted_copy(delft_job, tmp_path):  # noqa: F811
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
    ns2 = {**NS}
    raised = perturbed_copy(deby, tmp_path / "raised.gml", ns2, dz=-1.25)
    r = compare(deby, raised)
    assert r["overall"]["matched"] == 1
    assert r["overall"]["roof"]["median"] == pytest.approx(1.25, abs=1e-3)
    assert r["overall"]["roof"]["rmse_minus_median"] <= 1e-3
    assert r["buildings"][0]["measured_height_diff"] == 0.0  # the copy's measuredHeight was left as it was


def test_crs_mismatch_is_one_line_and_exit_2(delft_job, shared_data):  # noqa: F811
    res = cim_cli("compare-buildings", str(delft_job / "buildings.gml"), str(shared_data / "citygml-adv" / NRW),
                  timeout=120)
    assert res.returncode == 2
    assert "CRS mismatch" in res.stderr and "Traceback" not in res.stderr + res.stdout
    with pytest.raises(CrsError, match="Amersfoort"):
        compare(delft_job / "buildings.city.json", shared_data / "citygml-adv" / NRW)
