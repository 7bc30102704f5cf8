"""Delft AHN3: the roof types cim gives the 160 BGT buildings scored against hand labels made once from the points
(``tests/data/delft_rooftypes.csv``; how they were made: ``tests/data/delft_rooftypes.md``)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import cim.io.las as las
from cim.buildings.footprints import read_footprints
from cim.buildings.rooftype import ROOF_TYPE_NAMES
from cim.buildings.run import reconstruct_cloud
from cim.points import PointCloud

LABELS = Path(__file__).parent / "data" / "delft_rooftypes.csv"
CONFIDENCE = ("high", "medium", "low")


def _labels() -> list[dict[str, str]]:
    with LABELS.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def delft_types(repo_data):
    cloud = PointCloud.concat([las.read(repo_data / "delft" / f"ahn3_cropped_{i}.laz", crs="EPSG:7415")
                               for i in (1, 2)])
    fps = read_footprints(repo_data / "delft" / "bgt_pand.sqlite", "EPSG:7415")
    return fps, {m.id: m.attributes.get("roof_type") for m in reconstruct_cloud(cloud, fps)}


def test_labels_cover_every_footprint_once(delft_types):
    """One label per Delft footprint, each an AdV AX_Dachform code with a confidence and a note."""
    fps, _ = delft_types
    rows = _labels()
    assert sorted(r["id"] for r in rows) == sorted(f.id for f in fps)
    assert len({r["id"] for r in rows}) == len(rows) == 160
    assert all(int(r["roof_type"]) in ROOF_TYPE_NAMES and r["confidence"] in CONFIDENCE and r["note"] for r in rows)


def test_delft_roof_types_against_hand_labels(delft_types):
    """Agreement overall, per labelled type and per label confidence; the confusions printed. Measured when the
    labels were committed: 44.4 % overall (71/160), 76 % on the 50 high-confidence labels; 43.8 % since the
    special types (cross gables must share one pitch: two roofs typed gable became mixed, labelled gable and
    mansard); 63.1 % (101/160), 90 % of the high-confidence labels, since the building's type is its main roof's
    (``rooftype.building_roof_type``); 72.5 % (116/160), 92 % of the high-confidence labels, since box dormers and
    flat strips below the ridge are superstructures, a hip at one end makes a hip roof, hip-end pairs may differ
    in area by a factor 4 and a mansard's shallow planes must lie on top of its steep ones; 73.1 % (117/160), 92 %
    of the high-confidence labels, with the 0.25 m partition and the standard shapes that know the cloud's
    rounding merged (two roofs that GEOS failed to type, 9999, typed again). Most disagreements
    left: labelled gable roofs with a hip facet at one end typed hip (11; the labelling rule says 3200 for a hip
    at one end, the labels were kept) and gable roofs typed mixed (8)."""
    _, types = delft_types
    rows = _labels()
    truth = np.array([int(r["roof_type"]) for r in rows])
    got = np.array([types[r["id"]] or 0 for r in rows])
    conf = np.array([r["confidence"] for r in rows])
    agree = truth == got
    per_type = {ROOF_TYPE_NAMES[t]: f"{agree[truth == t].sum()}/{(truth == t).sum()}" for t in np.unique(truth)}
    per_conf = {c: round(float(agree[conf == c].mean()), 3) for c in CONFIDENCE}
    confusion = Counter((ROOF_TYPE_NAMES[t], ROOF_TYPE_NAMES.get(g, "none")) for t, g in zip(truth, got) if t != g)
    print(f"Delft roof types vs hand labels: {agree.mean():.3f} agree; per labelled type {per_type}; per "
          f"confidence {per_conf}; confusions (label, cim) {confusion.most_common()}")
    assert agree.mean() >= 0.72
    assert per_conf["high"] >= 0.90
