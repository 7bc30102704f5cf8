"""Garden sheds of 5-9 m² with flat and shed roofs (issue 14): an image-matching DSM rounds their whole outline over
0.5 m, so the points make a dome that a hip, pyramid or mansard fits best. The standard shapes compete only where
the points can show every plane (outside the rounding width the points themselves give): the sheds stay flat/shed."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from cim.buildings.footprints import Footprint
from cim.buildings.rooftype import GABLE, HIP
from cim.buildings.shapes import ShapeFit, _core_owner, beyond_rounding, resolved
from cim.buildings.run import reconstruct_cloud
from cim.cityjson import BuildingGeometry
from cim.synth.rooflib import ORIGIN, buildings_from_solids
from cim.synth.roofs import FLAT, SHED, place, rectangle_solid
from cim.synth.scanstyles import ALS, IMAGE_MATCHING, scan


def _zero(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.zeros(len(x))


@pytest.fixture(scope="module")
def sheds():
    """20 sheds (10 flat, 10 shed roofs of 6-14°), 2.2-3.4 m by 2.2-3 m, eaves 2.3-2.7 m, random orientation."""
    rng = np.random.default_rng(14)
    solids, truth = [], []
    for i in range(20):
        roof_type = FLAT if i % 2 else SHED
        length, width = rng.uniform(2.2, 3.4), rng.uniform(2.2, 3.0)
        eave = rng.uniform(2.3, 2.7)
        ridge = eave + width * np.tan(np.radians(rng.uniform(6, 14)))
        faces, sem = rectangle_solid(length, width, eave, ridge, roof_type)
        faces = place(faces, rng.uniform(0, 180), ORIGIN[0] + 20.0 * (i % 5), ORIGIN[1] + 20.0 * (i // 5), 0.0)
        solids.append(BuildingGeometry(f"s{i:02d}", faces, sem))
        truth.append(roof_type)
    return buildings_from_solids(solids), np.array(truth)


@pytest.mark.parametrize(("style", "radius"), [(ALS, (0.0, 0.2)), (IMAGE_MATCHING, (0.3, 0.6))],
                         ids=["als", "image-matching"])
def test_shed_types(sheds, style, radius):
    """Every shed typed flat or shed as built (measured: ALS 20/20, image matching 18/20; before the rounding was
    known, image matching gave hip, pyramid or mansard to most of them); the rounding width estimated from the points
    is the style's (median: ALS ≤ 0.2 m, image matching near its 0.5 m disk)."""
    lib, truth = sheds
    models = reconstruct_cloud(scan(lib, style, seed=3, ground=_zero), [Footprint(b.id, b.footprint) for b in lib])
    got = np.array([m.attributes.get("roof_type") or 0 for m in models])
    print(f"sheds, {style.name}: {np.mean(got == truth):.2f}; (truth, got) wrong: "
          f"{[(int(t), int(g)) for t, g in zip(truth, got) if t != g]}; rounding "
          f"{sorted(m.attributes.get('point_rounding') for m in models)}")
    assert all(m.status == "lod22" for m in models)
    assert np.isin(got, (FLAT, SHED)).mean() >= 0.9
    assert np.mean(got == truth) >= 0.85
    assert radius[0] <= np.median([m.attributes["point_rounding"] for m in models]) <= radius[1]


def test_resolved_planes():
    """A hip on a 2.6 × 2.4 m roof (points every 0.2 m): every plane owns points when the cloud is sharp, its end
    planes own none farther than 0.5 m from the outline and the hip lines; a gable on a 10 × 8 m roof keeps both
    planes either way. Break-line distances checked against the geometry: a point 0.3 m beside the ridge is not
    a core point at 0.5 m, one 0.7 m beside it is."""
    gx, gy = np.meshgrid(np.arange(-1.2, 1.21, 0.2), np.arange(-1.1, 1.11, 0.2))
    xyz = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    small = shapely.box(-1.3, -1.2, 1.3, 1.2)
    s = 0.5  # hip planes of slope 0.5, ridge along x from -0.1 to 0.1
    hip = ShapeFit(HIP, [(0.0, -s, 3.0), (0.0, s, 3.0), (-s, 0.0, 3.0 + s * 0.1), (s, 0.0, 3.0 + s * 0.1)], 4, 0, 0)
    assert resolved(hip, beyond_rounding(small, xyz, 0.0), 0.0, 5)
    assert not resolved(hip, beyond_rounding(small, xyz, 0.5), 0.5, 5)
    gx, gy = np.meshgrid(np.arange(-5, 5.01, 0.2), np.arange(-4, 4.01, 0.2))
    big = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    gable = ShapeFit(GABLE, [(0.0, -s, 3.0), (0.0, s, 3.0)], 2, 0, 0)
    assert resolved(gable, beyond_rounding(shapely.box(-5.1, -4.1, 5.1, 4.1), big, 0.5), 0.5, 5)
    owner = _core_owner(gable.planes, np.array([[0.0, 0.3, 0.0], [0.0, -0.7, 0.0]]), 0.5)
    assert owner.tolist() == [-1, 1]  # z = 3 + s·y is the lower plane where y < 0; the ridge lies 0.7 m away
