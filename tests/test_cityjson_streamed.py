"""write.cityjson's streamed writer: one part (a tile's buildings) in memory at a time, byte for byte what the
in-memory writers (write_cityjson, write_cityjsonseq) write for all buildings sorted by id."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from cim.cityjson import BuildingGeometry, write_cityjson, write_cityjson_streamed, write_cityjsonseq
from test_buildings_cityjson import block, gable_house

CRS = "EPSG:25832+7837"
META = {"title": "streamed", "referenceDate": "2026-04-20"}


def _buildings() -> list[list[BuildingGeometry]]:
    """Buildings (LoD 2.2 + 1.2 of one id each), neighbours sharing walls, scattered over the parts below."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(40):
        x, y = 410000.0 + 10.0 * (i % 8), 5479000.0 + 12.0 * (i // 8)  # rows of houses wall to wall
        zg = 230.0 + rng.random()
        lod2 = gable_house(f"B{(i * 17) % 40:03d}", x, y, 10.0, 8.0, zg, zg + 6.0, zg + 9.0)
        lod1 = block(lod2.id, x, y, 10.0, 8.0, zg, zg + 7.5)
        lod1.attributes = {}
        out.append([lod2, lod1])
    return out


def _parts(buildings: list[list[BuildingGeometry]], n: int) -> list:
    return [functools.partial(lambda k: buildings[k::n], k) for k in range(n)]


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_streamed_files_are_the_in_memory_files(tmp_path, parts):
    buildings = _buildings()
    ordered = [g for group in sorted(buildings, key=lambda g: g[0].id) for g in group]
    write_cityjson(tmp_path / "all.city.json", ordered, CRS, scale=0.01, metadata=META)
    write_cityjsonseq(tmp_path / "all.city.jsonl", ordered, CRS, scale=0.01, metadata=META)
    count = write_cityjson_streamed(tmp_path / "s.city.json", tmp_path / "s.city.jsonl", _parts(buildings, parts),
                                    CRS, tmp_path / "work", scale=0.01, metadata=META)
    assert count == 40
    assert (tmp_path / "s.city.json").read_bytes() == (tmp_path / "all.city.json").read_bytes()
    assert (tmp_path / "s.city.jsonl").read_bytes() == (tmp_path / "all.city.jsonl").read_bytes()
    assert not list((tmp_path / "work").iterdir())  # the scratch files are gone


def test_no_buildings_and_a_building_in_two_parts(tmp_path):
    assert write_cityjson_streamed(tmp_path / "e.city.json", tmp_path / "e.city.jsonl", [list], CRS, tmp_path) == 0
    write_cityjson(tmp_path / "all.city.json", [], CRS)
    assert (tmp_path / "e.city.json").read_bytes() == (tmp_path / "all.city.json").read_bytes()
    house = [gable_house("B1")]
    with pytest.raises(ValueError, match="B1"):
        write_cityjson_streamed(tmp_path / "d.city.json", None, [lambda: [house], lambda: [house]], CRS, tmp_path)
