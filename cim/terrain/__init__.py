"""Terrain: noise, ground and object classification, and seamless DTM / DSM / nDSM / density rasters.

In-memory API (numpy first)::

    from cim.terrain import classify_ground, GridSpec, dtm_grid
    ground = classify_ground(pc)                       # bool mask, SMRF
    grid = GridSpec.from_bounds(*pc.bounds.xy, resolution=0.5)
    dtm = dtm_grid(pc, grid, ground=ground)            # (rows, cols), NaN = nodata

Those names are imported on first use, so that importing a light submodule (:mod:`cim.terrain.grid`,
:mod:`cim.terrain.params`) does not import scipy.
"""

from __future__ import annotations

from typing import Any

_GRID = ("GridSpec",)
_PARAMS = ("SmrfParams",)
_GROUND = ("classify_ground", "ground_mask", "smrf")
_DTM = ("GROUND", "dtm_grid", "dsm_grid", "ndsm_grid", "density_grid", "sample_grid", "height_above_ground")

__all__ = [*_GRID, *_PARAMS, *_GROUND, *_DTM]


def __getattr__(name: str) -> Any:
    """A name of the in-memory API, from the submodule that defines it (imported now)."""
    if name in _GRID:
        from cim.terrain import grid as module
    elif name in _PARAMS:
        from cim.terrain import params as module
    elif name in _GROUND:
        from cim.terrain import ground as module
    elif name in _DTM:
        from cim.terrain import dtm as module
    else:
        raise AttributeError(f"module 'cim.terrain' has no attribute {name!r}")
    return getattr(module, name)
