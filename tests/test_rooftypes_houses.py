"""Main roofs as reality has them (issue 14): gable, hip, half-hip and mansard houses with 1-4 gable or shed
dormers, chimneys, a lower flat or shed annex and a porch inside the same footprint (``HOUSE_GROUPS`` of the roof
library). Their AdV type is the main roof's; both scan styles, scored against that exact truth."""

from __future__ import annotations

import numpy as np
import pytest

from cim.buildings.evaluate import footprint_of
from cim.buildings.footprints import Footprint
from cim.buildings.run import reconstruct_cloud
from cim.buildings.validity import check_solid
from cim.synth.rooflib import HOUSE_GROUPS, roof_library
from cim.synth.roofs import GABLE, HALF_HIP, HIP, MANSARD
from cim.synth.scanstyles import ALS, IMAGE_MATCHING, scan, surface


@pytest.fixture(scope="module")
def houses():
    return roof_library(seed=2, scale=3, groups=HOUSE_GROUPS)  # 30 houses


def test_house_truth(houses):
    """Valid closed truth solids; the four main types; superstructures that show: dormers above the main roof,
    annexes and porches below its eaves, widening the footprint beyond the main body."""
    assert {b.roof_type for b in houses} == {GABLE, HIP, HALF_HIP, MANSARD}
    assert all(check_solid(s.faces).valid for b in houses for s in b.parts)
    with_parts = [b for b in houses if len(b.solids) > 1]
    assert len(with_parts) >= 0.9 * len(houses)
    for b in with_parts:
        main = b.solids[0]
        xy = np.array([f[:, :2].mean(axis=0) for s in b.solids[1:] for f in s.faces])
        top = surface(b.solids, lambda x, y: np.zeros(len(x)), xy[:, 0], xy[:, 1])
        body = surface([main], lambda x, y: np.zeros(len(x)), xy[:, 0], xy[:, 1])
        assert (top != body).any(), b.id  # every added part changes the roof somewhere
    wider = [b.footprint.area > footprint_of(b.solids[0]).area + 1.0 for b in houses]  # annex or porch
    assert 0.5 <= np.mean(wider) < 1.0


@pytest.mark.parametrize(("style", "expected"), [(ALS, 0.95), (IMAGE_MATCHING, 0.9)], ids=["als", "image-matching"])
def test_house_types(houses, style, expected):
    """The main roof's type through dormers, chimneys, annexes and porches, overall and on the gable and hip houses
    (the types of nearly all official roofs that are not flat). Measured: ALS 30/30; image matching 27/30 (issue
    14's target 90 %) with the main-roof rules for box dormers and hips at one end, the standard shapes that know
    the cloud's rounding and the 0.25 m partition together (25/30 with the rounding alone, 23/30 before either):
    one gable typed mixed, two half-hip houses typed gable and hip by the data-driven typing (their annexes keep
    the standard shapes out). Every house LoD2.2 with a valid solid; the main roof at least half of the roof."""
    cloud = scan(houses, style, seed=5)
    models = reconstruct_cloud(cloud, [Footprint(b.id, b.footprint) for b in houses])
    got = np.array([m.attributes["roof_type"] for m in models])
    truth = np.array([b.roof_type for b in houses])
    print(f"houses, {style.name}: {np.mean(got == truth):.3f}; wrong (truth, got): "
          f"{[(int(t), int(g)) for t, g in zip(truth, got) if t != g]}")
    assert np.mean(got == truth) >= expected
    main_forms = np.isin(truth, (GABLE, HIP))
    assert np.mean(got[main_forms] == truth[main_forms]) >= 0.9
    assert all(m.status == "lod22" and check_solid(m.lod22).valid for m in models)
    assert np.median([m.attributes["roof_main_share"] for m in models]) >= 0.5
    assert sum(m.attributes["roof_superstructures"] + m.attributes["roof_annexes"] > 0 for m in models) >= 15
