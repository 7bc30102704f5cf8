"""The parameters of the terrain filters and the rasters' nodata value, as plain values: light to import (no
scipy, no rasterio), so that stage options can take their defaults from them (:mod:`cim.stages.terrain`).

:mod:`cim.terrain.ground`, :mod:`cim.terrain.objects` and :mod:`cim.terrain.raster` use them (and export them
under their old names).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: ASPRS classes of low (7) and high (18) noise.
NOISE_CLASSES = (7, 18)
#: The nodata value of the height rasters (DTM, DSM, nDSM).
NODATA = -9999.0


@dataclass(frozen=True)
class SmrfParams:
    """The SMRF ground filter's parameters (lengths in metres; see :mod:`cim.terrain.ground`)."""

    cell: float = 1.0
    slope: float = 0.15
    window: float = 18.0
    threshold: float = 0.4
    scalar: float = 1.25
    refine: int = 2
    slope_window: float = 5.0
    max_edge: float = 30.0

    def validate(self) -> SmrfParams:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SMRF parameter {name} must be a finite number >= 0, got {value!r}")
        if self.cell <= 0 or self.window < self.cell:
            raise ValueError("SMRF needs cell > 0 and window >= cell")
        if self.refine != int(self.refine):
            raise ValueError(f"SMRF refine must be a whole number of passes, got {self.refine!r}")
        return self

    def in_units(self, unit: float) -> SmrfParams:
        """The same filter for coordinates in units of ``unit`` metres (lengths divided, slopes kept)."""
        if unit == 1.0:
            return self
        return SmrfParams(
            self.cell / unit,
            self.slope,
            self.window / unit,
            self.threshold / unit,
            self.scalar / unit,
            self.refine,
            self.slope_window / unit,
            self.max_edge / unit,
        )


@dataclass(frozen=True)
class ObjectParams:
    """The object classification's parameters (see :mod:`cim.terrain.objects`)."""

    k: int = 12  # neighbours for the local shape
    min_height: float = 2.0  # m above ground for building points
    planarity: float = 0.0  # (l2 - l3) / l1 at least this for a planar point
    scatter: float = 0.1  # l3 / l1 at most this for a planar point
    cell: float = 1.0  # m, grid of the building regions
    min_area: float = 12.0  # m2, smallest building part
    planar_share: float = 0.5  # share of planar points for a building cell
    low_veg: float = 0.5  # m, top of low vegetation (3)
    medium_veg: float = 2.0  # m, top of medium vegetation (4)
    dtm_cell: float = 1.0  # m, DTM cell for the height above ground

