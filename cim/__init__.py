"""cim: City Information Modeling toolkit.

Numpy-first values (:class:`cim.PointCloud`), readers and writers, and a Dask pipeline runner that turns mobile
and aerial mapping data into a georeferenced digital twin (3D Tiles, CityJSON, COG rasters, web panoramas).
"""

from __future__ import annotations

from cim import crs as _crs

_crs.register_shipped_grids()

from cim.errors import CimError, CimWarning, ConfigError, CrsError, InputError  # noqa: E402
from cim.points import Bounds, PointCloud  # noqa: E402
from cim.io.las import read, write  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Bounds",
    "CimError",
    "CimWarning",
    "ConfigError",
    "CrsError",
    "InputError",
    "PointCloud",
    "read",
    "write",
    "__version__",
]
