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


def run(job_file, **options):  # noqa: ANN001, ANN201 - thin lazy wrapper, documented in cim.pipeline.execute.run
    """Run a TOML job from Python (see :func:`cim.pipeline.execute.run`); returns a ``JobRun``."""
    from cim.pipeline.execute import run as run_job_file

    return run_job_file(job_file, **options)

__all__ = [
    "Bounds",
    "CimError",
    "CimWarning",
    "ConfigError",
    "CrsError",
    "InputError",
    "PointCloud",
    "read",
    "run",
    "write",
    "__version__",
]
