"""Grids built from points cover every point, also those a hair below a cell edge."""

import numpy as np

from cim.terrain.grid import GridSpec


def test_points_just_below_a_cell_edge_get_a_cell() -> None:
    x = np.array([84919.99999999999, 84930.0, 84925.0])
    y = np.array([447479.99999999994, 447500.0, 447490.0])
    for resolution in (0.5, 1.0, 10.0):
        assert np.all(GridSpec.from_points(x, y, resolution).flat_index(x, y) >= 0)
