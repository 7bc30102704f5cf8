"""The synth notebook runs headless, so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_synth_notebook_executes() -> None:
    notebook = nbformat.read(REPO / "notebooks" / "02-synth.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.get("outputs", []))
    assert "buildings;" in text and "DHHN2016" in text
    corners = int(text.split("roof corners within 60 m:")[1].split()[0])
    assert corners > 50
    nadir = float(text.split("depth at the nadir pixel:")[1].split()[0])
    assert 2.4 < nadir < 2.8  # the camera is 2.6 m above the road
