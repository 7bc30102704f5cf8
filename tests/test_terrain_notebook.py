"""The terrain notebook runs top to bottom on the shipped Delft tile and shows real results."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_terrain_notebook_classifies_delft_and_draws_the_rasters():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbclient.execute(nbformat.read(NOTEBOOKS / "05-terrain.ipynb", as_version=4), cwd=str(NOTEBOOKS),
                                timeout=120, kernel_name="python3")
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    printed = "".join(o.get("text", "") for o in outputs)
    ground_f1 = float(re.search(r"ground vs AHN: .* F1 ([0-9.]+)", printed).group(1))
    building_f1 = float(re.search(r"buildings vs AHN: .* F1 ([0-9.]+)", printed).group(1))
    assert ground_f1 >= 0.93 and building_f1 >= 0.85, printed
    assert float(re.search(r"filled ([0-9.]+)%", printed).group(1)) > 95  # gaps under buildings filled
    pngs = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and len(base64.b64decode(pngs[0])) > 20_000  # three rasters drawn, not a blank figure
