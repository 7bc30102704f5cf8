"""Terrain: noise, ground and object classification, and seamless DTM / DSM / nDSM / density rasters.

In-memory API (numpy first)::

    from cim.terrain import classify_ground, GridSpec, dtm_grid
    ground = classify_ground(pc)                       # bool mask, SMRF
    grid = GridSpec.from_bounds(*pc.bounds.xy, resolution=0.5)
    dtm = dtm_grid(pc, grid, ground=ground)            # (rows, cols), NaN = nodata
"""

from cim.terrain import dtm as _dtm
from cim.terrain.dtm import (
    GROUND,
    density_grid,
    dsm_grid,
    dtm_grid,
    height_above_ground,
    ndsm_grid,
    sample_grid,
)
from cim.terrain.grid import GridSpec
from cim.terrain.ground import SmrfParams, classify_ground, ground_mask, smrf

__all__ = ["GridSpec", "SmrfParams", "classify_ground", "ground_mask", "smrf", *_dtm.__all__]
