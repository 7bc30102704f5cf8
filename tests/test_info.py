"""`cim info` on real files: counts, classes, CRS and its warnings, human and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import cim

from tests.helpers import cim_cli


def test_info_json_on_the_shipped_files(repo_data: Path) -> None:
    files = [str(repo_data / "delft" / f"ahn3_cropped_{i}.laz") for i in (1, 2)]
    result = cim_cli("info", *files, "--json", "--crs", "EPSG:7415")
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert (first["point_count"], second["point_count"]) == (640510, 208432)
    assert first["classification"] == {"1": 196137, "2": 195988, "6": 246753, "9": 267, "26": 1365}
    assert first["crs"]["code"] == "EPSG:28992+5709" and first["crs"]["vertical"].startswith("EPSG:5709")
    assert first["format"] == "LAZ" and first["version"] == "1.2" and first["point_format"] == 1
    assert abs(first["bounds"]["max"][0] - 84999.999) < 1e-6
    assert set(first["returns"]) == {"1", "2", "3", "4", "5"}
    assert 5 < first["density"]["occupied_points_per_m2"] < 40
    assert first["gps_time"][0] < first["gps_time"][1] and first["gps_time_type"] == "GPS week seconds"


def test_info_without_crs_reports_none(repo_data: Path) -> None:
    result = cim_cli("info", str(repo_data / "delft" / "ahn3_cropped_2.laz"), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["crs"]["source"] == "none"


def test_info_human_table_and_crs_sanity_warning(shared_data: Path) -> None:
    result = cim_cli("info", str(shared_data / "edge-cases" / "1.2-with-color.copc.laz"))
    assert result.returncode == 0, result.stderr
    assert "COPC 1.4, point format 7" in result.stdout
    assert "EPSG:2991+6360" in result.stdout
    assert "outside the area of use" in result.stdout  # the declared CRS contradicts the coordinates


def test_info_on_compound_geotiff_keys_and_feet(shared_data: Path) -> None:
    result = cim_cli("info", str(shared_data / "bcts" / "bcts_1.laz"), str(shared_data / "autzen" / "autzen_trim.laz"),
                     "--json")
    bcts, autzen = json.loads(result.stdout)
    assert bcts["crs"]["code"] == "EPSG:3005+5713" and bcts["point_count"] == 531662
    assert bcts["classification"] == {"1": 482933, "2": 48729}
    assert autzen["crs"]["units"] == "foot" and autzen["point_count"] == 110000


def test_info_on_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = cim_cli("info", str(tmp_path / "missing.laz"))
    assert result.returncode == 2
    assert "missing.laz: file not found" in result.stderr and "Traceback" not in result.stderr


def test_info_reports_adjusted_standard_gps_time_as_gps_seconds(tmp_path: Path) -> None:
    gps = 1.4e9 + np.arange(3.0)
    cloud = cim.PointCloud({"x": np.arange(3.0), "y": np.zeros(3), "z": np.zeros(3), "gps_time": gps},
                           cim.crs.resolve("EPSG:25832+7837"))
    path = cim.write(tmp_path / "adjusted.laz", cloud)
    fact = json.loads(cim_cli("info", str(path), "--json").stdout)
    assert fact["gps_time_type"].startswith("adjusted standard")
    assert fact["gps_time"] == [1.4e9, 1.4e9 + 2]
