"""Issue 14's held-out German delivery, simulated from exact truth (cim.synth.delivery) and run end to end as a new
user runs it: ``cim buildings`` with the official CityGML as footprints, ``cim run`` with GeoJSON footprints.
Image-matching points clipped to the footprints (no ground), roofs labelled 1/2, DHDN / GK zone 4 + DHHN92."""

from __future__ import annotations

import json
from pathlib import Path

import laspy
import numpy as np
import pyproj
import pytest
import shapely

import cim
from cim import crs
from cim.buildings.footprints import check_footprint_file, read_footprints
from cim.buildings.ground_dtm import follows_points
from cim.buildings.run import DTM_ON_ROOFS
from cim.citygml.adv import crs_from_srs_name, srs_name
from cim.citygml.reader import read_citygml
from cim.errors import CimWarning, InputError
from cim.synth import rooflib
from cim.synth.delivery import SHIFT, Delivery, delivery_buildings, german_delivery, score, true_dtm
from cim.synth.scanstyles import IMAGE_MATCHING
from cim.terrain.grid import GridSpec

from tests.helpers import cim_cli, write_job
from tests.test_crs_plan import BETA2007_BY_HAND

RUN = ("--scheduler", "threads", "--workers", "1")
ACCEPT = ("--accept-height-system", "DHHN92-as-DHHN2016")


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Delivery:
    return german_delivery(tmp_path_factory.mktemp("delivery"), seed=0)


@pytest.fixture(scope="module")
def products(delivery: Delivery, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cim buildings`` on the delivery: LAZ + the official LoD2 CityGML as footprints, CityJSON and CityGML."""
    out = tmp_path_factory.mktemp("run") / "out"
    done = cim_cli("buildings", str(delivery.points), "--footprints", str(delivery.official), "--out", str(out),
                   "--format", "cityjson", "--format", "citygml", *ACCEPT, *RUN)
    assert done.returncode == 0, done.stdout + done.stderr
    # the points labelled ground are roofs: no DTM product made of them, and the command says why
    assert "no DTM written" in done.stdout and "give --dtm" in done.stdout
    assert not (out / "dtm.vrt").exists() and not (out / "dtm").exists()
    return out


def test_the_delivery_is_what_the_issue_describes(delivery: Delivery) -> None:
    with laspy.open(delivery.points) as f:
        declared = f.header.parse_crs()
        cloud = f.read()
    assert declared.equals(pyproj.CRS("EPSG:31468+5783"))
    cls = np.asarray(cloud.classification)
    xy = np.column_stack([cloud.x, cloud.y])
    fps = {b.id: b.footprint for b in delivery.buildings}
    owner = np.full(len(xy), "", dtype=object)
    for bid, fp in fps.items():
        owner[shapely.contains_xy(fp, xy[:, 0], xy[:, 1])] = bid
    # clipped to the footprints: no ground point around the buildings (LAS stores centimetres)
    union = shapely.union_all(list(fps.values()))
    assert shapely.distance(union, shapely.points(xy[owner == ""])).max() < 0.01
    bad = np.isin(owner, delivery.mislabelled)
    assert len(delivery.mislabelled) == 4 and np.isin(cls[bad], 6).mean() < 0.01  # whole roofs labelled 1 or 2
    wrong = float(np.isin(cls[~bad], (1, 2)).mean())
    assert abs(wrong - IMAGE_MATCHING.mislabel) < 0.01
    assert 20 < len(delivery.buildings) <= 60
    # positions exactly in GK zone 4: BETA2007 written by hand takes a footprint back to the library's UTM 32
    library = delivery_buildings(0)
    back = pyproj.Transformer.from_pipeline(BETA2007_BY_HAND.format(grid=crs.shipped_grid_dir() / "BETA2007.gsb"))
    for mine, original in zip(delivery.buildings[::10], library[::10]):
        gk = np.asarray(mine.footprint.exterior.coords)
        utm = np.column_stack(back.transform(gk[:, 0], gk[:, 1]))
        expected = np.asarray(original.footprint.exterior.coords) + SHIFT
        assert np.abs(utm - expected).max() < 0.01
        assert mine.roof_type == original.roof_type and mine.ground == original.ground
    official = read_citygml(delivery.official)
    assert official.srs_name.startswith("urn:adv:crs:DE_DHDN_3GK4*DE_DHHN92_NH")
    assert [b.roof_type for b in official.buildings] == [b.roof_type for b in delivery.buildings]


def test_german_delivery_through_cim_buildings(delivery: Delivery, products: Path) -> None:
    result = score(products / "buildings.city.json", delivery)
    rows = result.pop("rows")
    assert result["matched"] == result["buildings"] == len(delivery.buildings)
    assert result["crashes"] == 0
    assert result["lod22_share"] >= 0.95
    assert result["type_agreement_main"] >= 0.85 and result["type_agreement"] >= 0.85
    # the cloud's own offset (the style's +0.3 m) comes out, and the shape after it is close to the truth
    assert abs(result["roof_offset_median"] - IMAGE_MATCHING.offset) < 0.05
    assert result["roof_rmse_centred_median"] <= 0.10
    # no ground points and no DTM: every ground is a flagged estimate, said so
    assert result["ground_source"] == {"estimated": len(delivery.buildings)}
    report = json.loads((products / "buildings" / "report.json").read_text())
    assert sorted(report["ground_estimated"]) == sorted(b.id for b in delivery.buildings)
    assert list(report["ground_reason"].values()) == [len(delivery.buildings)]
    city = json.loads((products / "buildings.city.json").read_text())
    attrs = [o["attributes"] for o in city["CityObjects"].values() if "attributes" in o]
    assert all(a["ground_flag"] and a["ground_reason"] for a in attrs)
    assert abs(result["ground_error_median"]) < 1.5  # an estimate, within the height of a storey
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[i]["status"] == "lod22" for i in delivery.mislabelled)  # roofs labelled 1/2 are modelled
    # the CityGML product: AdV roof types, DHHN2016 declared (the accepted heights), the source's ids and function
    gml = read_citygml(products / "buildings.gml")
    assert gml.crs.equals(pyproj.CRS("EPSG:31468+7837"))
    types = {b.name or b.id: b.roof_type for b in gml.buildings}
    assert sum(types[r["id"]] == r["truth"] for r in rows) / len(rows) >= 0.85
    assert {b.function for b in gml.buildings} == {"31001_1000"}


def test_dhhn92_refused_up_front_naming_the_option(delivery: Delivery, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cim_cli("buildings", str(delivery.points), "--footprints", str(delivery.official), "--out", str(out),
                   *RUN)
    assert done.returncode == 2
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "DHHN92" in message[0] and "cim buildings: --accept-height-system" in message[0]
    assert not (out / "buildings.city.json").exists()


def test_german_delivery_as_a_job_with_geojson_footprints_and_a_dtm(delivery: Delivery, tmp_path: Path) -> None:
    out = tmp_path / "job"
    job = write_job(tmp_path / "job.toml", f"""
[job]
name = "german-delivery"
output = "{out.as_posix()}"
accept_height_system = "DHHN92-as-DHHN2016"

[[stages]]
type = "read.las"
files = ["{delivery.points.as_posix()}"]

[[stages]]
type = "tile"
size = 250.0
buffer = 40.0

[[stages]]
type = "raster.dtm"
resolution = 0.5

[[stages]]
type = "buildings.lod2"
footprints = "{delivery.footprints_geojson.as_posix()}"

[[stages]]
type = "write.citygml"
""")
    done = cim_cli("run", str(job), *RUN)
    assert done.returncode == 0, done.stdout + done.stderr
    result = score(out / "buildings.gml", delivery)
    assert result["matched"] == len(delivery.buildings) and result["type_agreement_main"] >= 0.85
    assert result["roof_rmse_centred_median"] <= 0.10
    report = json.loads((out / "buildings" / "report.json").read_text())
    assert report["status"] == {"lod22": len(delivery.buildings)}
    # the job's DTM is made of the points labelled ground, i.e. roofs: not taken as the ground, and said so
    assert report["ground_source"] == {"estimated": len(delivery.buildings)}
    assert report["ground_reason"] == {DTM_ON_ROOFS: len(delivery.buildings)}


def test_footprints_from_official_citygml(shared_data: Path) -> None:
    nrw = shared_data / "citygml-adv" / "LoD2_32_354_5652_1_NW.gml"
    model = read_citygml(nrw)
    fps = read_footprints(nrw, "EPSG:25832+7837")
    assert [f.id for f in fps] == [b.id for b in model.buildings]
    for f, b in zip(fps, model.buildings):  # the outline's area is that of the ground surfaces (shoelace)
        rings = b.surfaces.get("GroundSurface", [])
        area = sum(abs(float(np.dot(r[:, 0], np.roll(r[:, 1], -1)) - np.dot(r[:, 1], np.roll(r[:, 0], -1)))) / 2
                   for r in rings)
        assert f.polygon.area == pytest.approx(area, rel=1e-3)
        assert f.attributes["roofType"] == b.roof_type
    box = fps[0].polygon.bounds
    check_footprint_file(nrw, pyproj.CRS("EPSG:25832+7837"), box)
    with pytest.raises(InputError, match="do not meet the points"):
        check_footprint_file(nrw, pyproj.CRS("EPSG:25832+7837"), (0.0, 0.0, 10.0, 10.0))
    deby = shared_data / "citygml-adv" / "DEBY_LOD2_4959457.gml"
    (one,) = read_footprints(deby, "EPSG:25832")
    assert one.polygon.area > 10 and one.id.startswith("DEBY")


def test_gauss_krueger_srs_names_round_trip() -> None:
    for code, name in ((31466, "DE_DHDN_3GK2"), (31468, "DE_DHDN_3GK4"), (31469, "DE_DHDN_3GK5")):
        compound = pyproj.CRS(f"EPSG:{code}+5783")
        assert srs_name(compound) == f"urn:adv:crs:{name}*DE_DHHN92_NH"
        assert crs_from_srs_name(srs_name(compound)).equals(compound)


def test_a_dtm_through_the_roof_points_is_recognised() -> None:
    grid = GridSpec(0.0, 20.0, 40, 40, 0.5)
    rng = np.random.default_rng(1)
    xy = rng.uniform(2, 18, (200, 2))
    roof = np.column_stack([xy, 108.0 + 0.1 * xy[:, 0]])
    x = grid.xmin + (np.arange(grid.width) + 0.5) * grid.resolution
    on_roofs = np.broadcast_to(108.0 + 0.1 * x, (grid.height, grid.width)).copy()
    assert follows_points((on_roofs, grid), roof)
    assert not follows_points((on_roofs - 5.0, grid), roof)  # a real ground 5 m below
    assert not follows_points((on_roofs, grid), roof[:5])  # too few points to tell


def test_a_horizontal_only_crs_is_told_its_own_compound() -> None:
    crs._to_geographic3d.cache_clear()  # the warning comes with the transformer, once per thread
    with pytest.warns(CimWarning, match=r"EPSG:31468\+7837"):
        crs.to_geographic3d(pyproj.CRS("EPSG:31468"))


def test_german_delivery_with_the_surveyors_dtm(delivery: Delivery, tmp_path: Path) -> None:
    """With a DTM (``--dtm``) the clipped cloud's buildings stand on it: not an estimate, and within centimetres
    of the true terrain; the DTM is not refused (it lies metres under the roof points labelled ground)."""
    dtm = true_dtm(tmp_path / "dtm.tif", delivery)
    out = tmp_path / "out"
    done = cim_cli("buildings", str(delivery.points), "--footprints", str(delivery.official), "--dtm", str(dtm),
                   "--out", str(out), "--no-tiles", *ACCEPT, *RUN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no DTM written" in done.stdout and "give --dtm" not in done.stdout
    result = score(out / "buildings.city.json", delivery)
    assert result["ground_source"] == {"dtm": len(delivery.buildings)}
    # the ground is a low percentile of the DTM on a ring around the footprint; the truth is the terrain at the
    # building's anchor: they differ by at most the terrain's fall across the ring (1.1 % slope)
    slope = float(np.hypot(*rooflib.GROUND_SLOPE))
    by_id = {b.id: b for b in delivery.buildings}
    for r in result["rows"]:
        ring = by_id[r["id"]].footprint.buffer(1.5, join_style="mitre")
        x0, y0, x1, y1 = ring.bounds
        assert -slope * np.hypot(x1 - x0, y1 - y0) - 0.02 < r["ground_error"] < 0.02
    assert result["lod22_share"] >= 0.95 and result["type_agreement_main"] >= 0.85


def test_compare_the_products_with_the_official_dhhn92_file(delivery: Delivery, products: Path,
                                                            tmp_path: Path) -> None:
    """The products of DHHN92 points declare DHHN2016: ``cim compare-buildings`` refuses the pair, naming the
    option, and with it compares them as they are (roof types and the cloud's +0.3 m offset come out)."""
    ours = products / "buildings.gml"
    refused = cim_cli("compare-buildings", str(ours), str(delivery.official))
    assert refused.returncode == 2 and "DHHN92" in refused.stderr and "--accept-height-system" in refused.stderr
    report = tmp_path / "compare.json"
    done = cim_cli("compare-buildings", str(ours), str(delivery.official), *ACCEPT, "--out", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    overall = json.loads(report.read_text())["overall"]
    assert overall["matched"] == len(delivery.buildings) and overall["roof_type_agreement"] >= 0.85
    assert abs(overall["roof"]["median"] - IMAGE_MATCHING.offset) < 0.05


def test_the_ground_sample_of_many_inputs_is_bounded_in_all(tmp_path: Path) -> None:
    """`cim buildings` samples the inputs' ground positions (to see whether the "ground" is roofs) in the driver:
    their number is bounded for the whole job, not per file, and the files' class facts are kept."""
    from cim.cli.buildings import sample_inputs

    rng = np.random.default_rng(4)
    paths = []
    for k in range(4):
        n = 3000
        cloud = {"x": rng.uniform(0, 100, n) + 100 * k, "y": rng.uniform(0, 100, n), "z": rng.uniform(0, 10, n),
                 "classification": np.where(np.arange(n) % 3 == 0, 2, 1 if k else 6).astype(np.uint8)}
        path = tmp_path / f"f{k}.las"
        cim.write(path, cim.PointCloud(cloud, crs.resolve("EPSG:25832+7837")))
        paths.append(str(path))
    sample = sample_inputs(paths, keep=400)
    assert sample.has_ground and sample.has_building
    assert 0 < len(sample.ground_xy) <= 400
    assert len(np.unique(np.floor(sample.ground_xy[:, 0] / 100))) == 4  # every file has its share
