"""The buildings notebook runs top to bottom and shows real results."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_buildings_notebook_runs_and_models_every_building():
    notebook = nbformat.read(REPO / "notebooks" / "06-buildings.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    summary = json.loads(printed[printed.index("{"): printed.index("\n}") + 2])
    assert summary["buildings"] >= 20 and summary["lod22"] == summary["valid_lod22"] == summary["buildings"]
    rmse = float(printed.split("points: RMSE ")[1].split()[0])
    assert 0.0 < rmse < 0.5
