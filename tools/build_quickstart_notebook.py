"""Write notebooks/01-quickstart.ipynb from the cells below (keeps the notebook reviewable as Python)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# cim quickstart\n\n"
        "Run the demo job (Delft AHN3 sample shipped in `data/`), then read its products through the Python API: "
        "numpy-first point clouds, the STAC catalog, and an off-screen pyvista rendering.\n\n"
        "Set `CIM_DEMO_OUT` to choose the output folder (default `../out/demo`)."
    ),
    new_code_cell(
        "import os\nfrom pathlib import Path\n\nimport numpy as np\nimport pystac\n\nimport cim\n\n"
        "OUT = Path(os.environ.get('CIM_DEMO_OUT', '../out/demo')).resolve()\n"
        "if not (OUT / 'report.json').exists():\n"
        "    result = cim.run('../pipelines/demo.toml', out=OUT)  # in-process Dask cluster\n"
        "    assert result.report.ok\n"
        "OUT"
    ),
    new_markdown_cell("## Points as numpy arrays\nEvery tile is a LAZ file; `cim.read` gives a `PointCloud`."),
    new_code_cell(
        "tiles = sorted((OUT / 'las').glob('*.laz'))\n"
        "cloud = cim.PointCloud.concat([cim.read(p) for p in tiles])\n"
        "print(cloud)\n"
        "print('points:', len(cloud), 'CRS:', cim.crs.describe(cloud.crs))\n"
        "print('classes:', {int(c): int(n) for c, n in enumerate(np.bincount(cloud.classification)) if n})"
    ),
    new_markdown_cell("## The catalog\nEvery product is a STAC item with projection and pointcloud fields."),
    new_code_cell(
        "catalog = pystac.Catalog.from_file(str(OUT / 'stac' / 'catalog.json'))\n"
        "items = list(catalog.get_items(recursive=True))\n"
        "clouds = [i for i in items if i.properties['cim:kind'] == 'pointcloud']\n"
        "print(len(items), 'items;', len(clouds), 'point-cloud tiles, first:', clouds[0].id, "
        "clouds[0].properties['pc:count'], 'points')"
    ),
    new_markdown_cell("## A look at the city block\nRendered off-screen, so this runs headless too."),
    new_code_cell(
        "import pyvista as pv\n\n"
        "pv.OFF_SCREEN = True\n"
        "step = max(1, len(cloud) // 200_000)\n"
        "xyz = cloud.xyz[::step]\n"
        "points = pv.PolyData(xyz - xyz.mean(axis=0))\n"
        "points['class'] = cloud.classification[::step]\n"
        "plotter = pv.Plotter(off_screen=True, window_size=(900, 600))\n"
        "plotter.add_points(points, scalars='class', point_size=2, cmap='tab10', show_scalar_bar=False)\n"
        "plotter.camera_position = 'iso'\n"
        "image_path = OUT / 'quickstart.png'\n"
        "plotter.screenshot(str(image_path))\n"
        "plotter.close()\n"
        "from IPython.display import Image\nImage(str(image_path))"
    ),
]


def main() -> None:
    notebook = new_notebook(cells=CELLS, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    path = Path(__file__).resolve().parents[1] / "notebooks" / "01-quickstart.ipynb"
    nbformat.write(notebook, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
