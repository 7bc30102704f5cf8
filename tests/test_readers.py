"""Reader stages share one protocol: a PLY and an E57 written from a LAS file's points (with plyfile and pye57,
independently of cim's readers) read back to the same points, and jobs read them like LAS."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

import cim
from cim.errors import InputError
from cim.io import e57, las, ply
from cim.io.readers import PointSource
from tests.helpers import REPO, cim_cli, write_job

COLOURED = "edge-cases/1.2-with-color.copc.laz"  # intensity and 8-bit colours in LAS's 16-bit fields


def _write_ply(path: Path, cloud: cim.PointCloud, text: bool = False) -> Path:
    """A PLY of every dimension of ``cloud`` with its own dtype (what CloudCompare or PDAL would write)."""
    vertices = np.empty(len(cloud), dtype=[(n, cloud[n].dtype.str) for n in cloud.names])
    for name in cloud.names:
        vertices[name] = cloud[name]
    PlyData([PlyElement.describe(vertices, "vertex")], text=text).write(str(path))
    return path


def _write_e57(path: Path, cloud: cim.PointCloud, origin: np.ndarray) -> Path:
    """An E57 scan of ``cloud``'s points relative to ``origin`` (its pose's translation), with intensity limits
    0..65535 and 8-bit colours (pye57 stores single-precision coordinates and 8-bit colours)."""
    import pye57

    local = cloud.xyz - origin
    data = {"cartesianX": local[:, 0], "cartesianY": local[:, 1], "cartesianZ": local[:, 2],
            "intensity": cloud.intensity.astype("f4"),
            **{f"color{c.title()}": cloud[c].astype("u1") for c in ("red", "green", "blue")}}
    lo, hi = local.min(axis=0), local.max(axis=0)
    header = types.SimpleNamespace(intensityMinimum=0.0, intensityMaximum=65535.0, xMinimum=lo[0], yMinimum=lo[1],
                                   zMinimum=lo[2], xMaximum=hi[0], yMaximum=hi[1], zMaximum=hi[2])
    writer = pye57.E57(str(path), mode="w")
    writer.write_scan_raw(data, scan_header=header, translation=origin, rotation=np.array([1.0, 0.0, 0.0, 0.0]))
    writer.close()
    return path


def _read_all(source: PointSource, chunk: int) -> cim.PointCloud:
    return cim.PointCloud.concat(list(source.chunks(chunk)))


def test_a_ply_reads_to_the_points_of_the_las_it_came_from(shared_data: Path, tmp_path: Path) -> None:
    original = cim.read(shared_data / COLOURED)
    for text in (False, True):
        source = ply.open_source(_write_ply(tmp_path / f"p{text}.ply", original, text), "EPSG:2993")
        cloud = _read_all(source, 400)  # three chunks
        assert source.point_count == len(original) and cloud.crs.to_epsg() == 2993
        assert cloud.names == original.names
        for name in original.names:
            np.testing.assert_array_equal(cloud[name], original[name], err_msg=name)
        assert source.bounds == original.bounds


def test_ply_colours_of_8_bits_become_16_bits_and_bad_files_name_themselves(tmp_path: Path) -> None:
    vertices = np.array([(1.0, 2.0, 3.0, 255, 0, 128, 0.5)], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                        ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("scalar_Intensity", "f4")])
    path = tmp_path / "rgb.ply"
    PlyData([PlyElement.describe(vertices, "vertex")]).write(str(path))
    cloud = _read_all(ply.open_source(path), 10)
    assert (cloud.red[0], cloud.green[0], cloud.blue[0]) == (65535, 0, 128 * 257)
    assert cloud.intensity.dtype == np.uint16 and cloud.intensity[0] == 0  # float 0.5 rounds to even
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n")
    with pytest.raises(InputError, match="bad.ply"):
        ply.open_source(bad)


def test_an_e57_reads_to_the_points_of_the_las_it_came_from(shared_data: Path, tmp_path: Path) -> None:
    original = cim.read(shared_data / COLOURED)
    origin = np.floor(original.xyz.min(axis=0))
    source = e57.open_source(_write_e57(tmp_path / "scan.e57", original, origin), "EPSG:2993")
    cloud = _read_all(source, 300)
    assert source.point_count == len(cloud) == len(original)
    resolution = float(las.open_source(shared_data / COLOURED).header.scales.min())  # 0.01 (feet)
    # single-precision scan coordinates (3 km extent: ~2e-4), placed by the pose: well under the LAS resolution
    assert np.abs(cloud.xyz - original.xyz).max() < 0.1 * resolution
    np.testing.assert_array_equal(cloud.intensity, original.intensity)
    for c in ("red", "green", "blue"):  # 8-bit E57 colours in LAS's 16-bit convention
        np.testing.assert_array_equal(cloud[c], original[c].astype("u2") * 257)
    b = source.bounds
    assert np.allclose(b.xy, original.bounds.xy, atol=1e-3)
    with pytest.raises(InputError, match="not_e57.e57"):
        e57.open_source(Path(_write_ply(tmp_path / "not_e57.e57", original)))


def test_jobs_with_read_ply_and_read_e57_give_the_points_of_the_read_las_job(shared_data: Path,
                                                                             tmp_path: Path) -> None:
    original = cim.read(REPO / "data" / "delft" / "ahn3_cropped_2.laz", crs="EPSG:7415")
    _write_ply(tmp_path / "in.ply", original)
    coloured = cim.read(shared_data / COLOURED)
    _write_e57(tmp_path / "in.e57", coloured, np.floor(coloured.xyz.min(axis=0)))

    def run(reader: str, files: str, crs: str, size: float) -> cim.PointCloud:
        out = tmp_path / reader
        job = write_job(tmp_path / f"{reader}.toml", f"""
[job]
output = "{out.as_posix()}"
crs = "{crs}"
[[stages]]
type = "{reader}"
files = ["{files}"]
chunk_size = 50000
[[stages]]
type = "tile"
size = {size}
buffer = 5.0
[[stages]]
type = "write.las"
""")
        result = cim_cli("run", str(job), "--scheduler", "threads")
        assert result.returncode == 0, result.stdout + result.stderr
        return cim.PointCloud.concat([las.read(p) for p in sorted((out / "las").glob("*.laz"))])

    from_las = run("read.las", (REPO / "data" / "delft" / "ahn3_cropped_2.laz").as_posix(), "EPSG:7415", 50.0)
    from_ply = run("read.ply", (tmp_path / "in.ply").as_posix(), "EPSG:7415", 50.0)
    assert len(from_ply) == len(from_las) == len(original)
    assert from_ply.names == from_las.names
    for name in from_las.names:
        np.testing.assert_array_equal(from_ply[name], from_las[name], err_msg=name)
    from_e57 = run("read.e57", (tmp_path / "in.e57").as_posix(), "EPSG:2993", 1000.0)
    order = np.lexsort((coloured.z, coloured.y, coloured.x))
    got = np.lexsort((from_e57.z, from_e57.y, from_e57.x))
    assert len(from_e57) == len(coloured)
    assert np.abs(from_e57.xyz[got] - coloured.xyz[order]).max() < 0.01  # the input's resolution
