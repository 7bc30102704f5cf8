"""The quickstart notebook runs headless against the demo output, so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
from nbclient import NotebookClient
from PIL import Image

from tests.helpers import REPO


def test_quickstart_notebook_executes_and_renders_the_city_block(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CIM_DEMO_OUT", str(tmp_path / "demo"))
    notebook = nbformat.read(REPO / "notebooks" / "01-quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.get("outputs", []))
    assert "points: 848942" in text
    assert "within 50 m of the centre:" in text and "COPC:" in text  # the PointCloud interop cell ran
    image = np.asarray(Image.open(tmp_path / "demo" / "quickstart.png").convert("RGB"))
    background = image[0, 0]
    assert (np.abs(image.astype(int) - background).sum(axis=2) > 30).mean() > 0.05  # points were drawn
