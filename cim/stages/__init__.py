"""Stage modules. Each module registers its stages with :func:`cim.pipeline.stage.register` when imported.

:data:`STAGE_MODULES` says which module holds which stage, so a job imports only the modules of the stages it
names (the terrain and buildings modules pull in scipy, rasterio, shapely: ~0.5 s and ~60 MB that a
``cim tiles`` run need not pay). A test keeps the index equal to what the modules register.
"""

from __future__ import annotations

import importlib
import pkgutil

STAGE_MODULES: dict[str, str] = {
    "read.las": "io",
    "tile": "io",
    "write.las": "io",
    "filter.outliers": "terrain",
    "classify.ground": "terrain",
    "classify.objects": "terrain",
    "raster.dtm": "terrain",
    "raster.dsm": "terrain",
    "raster.ndsm": "terrain",
    "raster.density": "terrain",
    "buildings.lod1": "buildings",
    "buildings.lod2": "buildings",
    "write.cityjson": "buildings",
    "tiles.buildings": "buildings",
    "tiles.pointcloud": "tiles",
    "tiles.terrain": "terrain_tiles",
    "panoramas.colorize": "panoramas",
}


def load_all() -> None:
    """Import every stage module in this package (idempotent)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def load(name: str) -> bool:
    """Import the module holding stage ``name``; False when the index does not know the name."""
    module = STAGE_MODULES.get(name)
    if module is None:
        return False
    importlib.import_module(f"{__name__}.{module}")
    return True
