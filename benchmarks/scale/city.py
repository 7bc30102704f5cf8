"""A deterministic city block of about N points in M LAZ files, a single-file variant and one footprint file.

Each file is one square synthetic city tile from :mod:`cim.synth` (terrain, streets, buildings, trees; ALS
ray-cast at ~16 points/m², EPSG:25832+7837), laid out in a rows x cols grid. Neighbouring tiles join
seamlessly: the street spacing divides the tile edge, the terrain is the same regional slope (no undulation,
whose phase is per tile) and every tile's base height follows that slope. The tiles are generated in parallel
processes, each in bounded memory; the single file is their chunked concatenation. A finished city is recorded
in ``city.json`` and reused when the same spec is asked for again.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import laspy
import numpy as np

from cim.fileutil import atomic_write, write_text_atomic


#: ALS pulses per m² that give ~16 points per m² over the synthetic city (measured: 16.07 at 60 m and 200 m)
PULSE_DENSITY = 15.0
POINT_DENSITY = 16.0
MIN_EXTENT = 60.0  # the synth generator's smallest block
STREET_SPACING = 100.0


@dataclass(frozen=True)
class CitySpec:
    """What to generate: ``points`` (approximate) in ``files`` LAZ files, from ``seed``."""

    points: int
    files: int
    seed: int = 7

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols): the most nearly square factorisation of ``files``."""
        rows = max(r for r in range(1, int(math.isqrt(self.files)) + 1) if self.files % r == 0)
        return rows, self.files // rows

    @property
    def extent(self) -> float:
        """Edge of one file's square tile (m, whole metres, at least the generator's minimum)."""
        return max(MIN_EXTENT, float(round(math.sqrt(self.points / (self.files * POINT_DENSITY)))))

    @property
    def name(self) -> str:
        return f"city-{self.points}-{self.files}-{self.seed}"


@dataclass(frozen=True)
class City:
    """A generated city: its LAZ files, the single-file variant, the footprints and their facts."""

    folder: Path
    files: list[Path]
    single: Path | None  # None until a run asks for the single-file layout
    footprints: Path
    facts: dict[str, Any]


def make_city(spec: CitySpec, root: Path, workers: int | None = None, single: bool = True) -> City:
    """The city of ``spec`` under ``root/<spec.name>`` (with its single-file variant when ``single``); a city
    that ``city.json`` records with the same spec is reused."""
    folder = root / spec.name
    record = folder / "city.json"
    facts = json.loads(record.read_text()) if record.exists() else {}
    if facts.get("spec") != asdict(spec):
        facts = _generate(spec, folder, workers)
        write_text_atomic(record, json.dumps(facts, indent=1, sort_keys=True) + "\n")
    if single and "single" not in facts:
        path = _concatenate([folder / f for f in facts["files"]], folder / "single.laz")
        facts.update(single=path.name, single_bytes=path.stat().st_size)
        write_text_atomic(record, json.dumps(facts, indent=1, sort_keys=True) + "\n")
    return City(folder, [folder / f for f in facts["files"]], folder / facts["single"] if "single" in facts else None,
                folder / facts["footprints"], facts)


def _generate(spec: CitySpec, folder: Path, workers: int | None) -> dict[str, Any]:
    """Generate the tiles of ``spec`` into ``folder`` (replacing what was there); returns the city's facts."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "laz").mkdir(parents=True)
    rows, cols = spec.grid
    jobs = [(spec, r, c, str(folder)) for r in range(rows) for c in range(cols)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        tiles = [_make_tile(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            tiles = list(pool.map(_make_tile, jobs))
    files = [folder / t["file"] for t in tiles]
    footprints = _merge_footprints([folder / t["footprints"] for t in tiles], folder / "footprints.geojson")
    shutil.rmtree(folder / "synth")  # the per-tile truth files; the footprints are merged above
    facts = {
        "spec": asdict(spec), "grid": [rows, cols], "tile_extent_m": spec.extent,
        "area_m2": spec.extent ** 2 * spec.files, "crs": "EPSG:25832+7837",
        "points": sum(t["points"] for t in tiles), "buildings": sum(t["buildings"] for t in tiles),
        "files": [t["file"] for t in tiles], "footprints": footprints.name,
        "bytes": sum(f.stat().st_size for f in files),
        "generator": f"cim.synth ALS {PULSE_DENSITY} pulses/m², mls off, undulation 0",
    }
    facts["points_per_m2"] = round(facts["points"] / facts["area_m2"], 2)
    return facts


def _make_tile(job: tuple[CitySpec, int, int, str]) -> dict[str, Any]:
    """Generate tile (row, col) of the city; returns its LAZ and footprint paths (relative) and counts."""
    from cim.synth import SynthConfig, generate
    from cim.synth.config import DEFAULT_ALS_GPS_START

    spec, row, col, folder = job
    e = spec.extent
    base = SynthConfig()
    dx, dy = col * e, row * e
    index = row * spec.grid[1] + col
    config = base.with_(
        extent=e, seed=spec.seed * 100_003 + index, mls=False, undulation=0.0, als_density=PULSE_DENSITY,
        origin=(base.origin[0] + dx, base.origin[1] + dy),
        base_height=base.base_height + base.slope[0] * dx + base.slope[1] * dy,
        street_spacing=e / max(1, round(e / STREET_SPACING)), als_gps_start=DEFAULT_ALS_GPS_START + 3600.0 * index,
    )
    name = f"r{row:02d}_c{col:02d}"
    city = generate(Path(folder) / "synth" / name, config)
    laz = Path(folder) / "laz" / f"{name}.laz"
    os.replace(city.als_laz, laz)
    with laspy.open(laz) as reader:
        points = reader.header.point_count
    return {"file": laz.relative_to(folder).as_posix(), "points": points, "buildings": len(city.scene.buildings),
            "footprints": city.footprints_gpkg.relative_to(folder).as_posix()}


def _concatenate(files: list[Path], path: Path, chunk: int = 2_000_000) -> Path:
    """All points of ``files`` in one LAZ file, streamed chunk by chunk (the first header, a common offset)."""
    headers = []
    for f in files:
        with laspy.open(f) as reader:
            headers.append(reader.header)
    header = copy.deepcopy(headers[0])
    header.offsets = np.floor(np.min([h.mins for h in headers], axis=0))
    with atomic_write(path) as tmp, laspy.open(tmp, mode="w", header=header,
                                               laz_backend=laspy.LazBackend.LazrsParallel) as writer:
        names = [n for n in header.point_format.dimension_names if n not in ("X", "Y", "Z")]
        for f in files:
            with laspy.open(f) as reader:
                for points in reader.chunk_iterator(chunk):
                    out = laspy.ScaleAwarePointRecord.zeros(len(points), header=header)
                    for n in names:
                        out[n] = points[n]
                    out.x, out.y, out.z = points.x, points.y, points.z
                    writer.write_points(out)
    return path


def _merge_footprints(paths: list[Path], path: Path) -> Path:
    """The tiles' footprints in one GeoJSON file; ids prefixed with their tile (``r00_c01/B0001``)."""
    import pyogrio

    geometries, ids, crs = [], [], None
    for p in paths:
        meta, _, geoms, fields = pyogrio.raw.read(p)
        names = list(meta["fields"])
        geometries.append(geoms)
        ids.append(np.array([f"{p.parent.name}/{i}" for i in fields[names.index("id")]], dtype=object))
        crs = crs or meta["crs"]
    with atomic_write(path) as tmp:
        pyogrio.raw.write(tmp, np.concatenate(geometries), [np.concatenate(ids)], ["id"], driver="GeoJSON",
                          geometry_type="Polygon", crs=crs)
    return path
