"""Whole-cloud classification (noise, ground, optionally objects) and the file-to-file ``cim ground`` workflow."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cim.crs import linear_unit_factor
from cim.points import Bounds, PointCloud
from cim.terrain import outliers
from cim.terrain.ground import NOISE_CLASSES, classify_ground
from cim.terrain.objects import ObjectParams, classify_objects

__all__ = ["classify_cloud", "classify_files"]


def classify_cloud(pc: PointCloud, *, backend: str = "smrf", objects: bool = False) -> np.ndarray:
    """New classification for every point: low noise 7, isolated 7/18, ground 2, the rest 1 -- or with ``objects``
    buildings 6 and vegetation 3/4/5. Existing noise labels are kept."""
    unit = linear_unit_factor(pc.crs) if pc.crs is not None else 1.0
    x, y, z = np.asarray(pc.x), np.asarray(pc.y), np.asarray(pc.z)
    cls = np.asarray(pc["classification"]).copy() if pc.has("classification") else np.zeros(len(pc), np.uint8)
    noisy = np.isin(cls, NOISE_CLASSES)
    low = outliers.low_noise(x, y, z, candidates=~noisy, unit=unit)
    lonely = outliers.isolated_points(pc.xyz, radius=5.0 / unit, min_neighbors=1) & ~low & ~noisy
    cls[low] = outliers.LOW_NOISE
    cls[lonely] = outliers.HIGH_NOISE
    work = PointCloud({"x": x, "y": y, "z": z, "classification": cls}, pc.crs)
    for name in ("return_number", "number_of_returns"):
        if pc.has(name):
            work.set(name, pc[name])
    ground = classify_ground(work, backend=backend)
    noisy = np.isin(cls, NOISE_CLASSES)
    cls = np.where(noisy, cls, np.where(ground, 2, 1)).astype(np.uint8)
    if objects:
        work.set("classification", cls)
        p = ObjectParams()
        if unit != 1.0:
            p = ObjectParams(min_height=p.min_height / unit, cell=p.cell / unit, min_area=p.min_area / unit**2,
                             low_veg=p.low_veg / unit, medium_veg=p.medium_veg / unit, dtm_cell=p.dtm_cell / unit)
        cls = classify_objects(work, params=p)
    return cls


def classify_files(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    crs: str | None = None,
    backend: str = "smrf",
    objects: bool = False,
    buffer: float = 30.0,
    copc: bool = False,
) -> Iterator[tuple[Path, dict]]:
    """Classify each input with the points of the other inputs within ``buffer`` as context and write it to
    ``out_dir`` under its own name (all points, LAS 1.4; as ``<stem>.copc.laz`` with ``copc``). Yields (input
    path, stats with the written file as ``output``) per file."""
    from cim.io import copc as copc_io, las

    paths = [Path(p) for p in inputs]
    sources = [las.open_source(p, crs) for p in paths]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (path, src) in enumerate(zip(paths, sources)):
        own = las.read(path, crs=crs)
        b = src.bounds
        grown = Bounds(b.minx - buffer, b.miny - buffer, -1e12, b.maxx + buffer, b.maxy + buffer, 1e12)
        context = []
        for j, other in enumerate(sources):
            ob = other.bounds
            if j == i or ob.minx > grown.maxx or ob.maxx < grown.minx or ob.miny > grown.maxy or ob.maxy < grown.miny:
                continue
            part = las.read(paths[j], crs=crs, bounds=grown)
            if len(part):
                context.append(part)
        n = len(own)
        if context:
            keep = ["x", "y", "z"] + [k for k in ("classification", "return_number", "number_of_returns")
                                       if own.has(k) and all(c.has(k) for c in context)]
            merged = PointCloud.concat([PointCloud({k: c[k] for k in keep}, own.crs) for c in [own, *context]])
        else:
            merged = own
        cls = classify_cloud(merged, backend=backend, objects=objects)[:n]
        own.set("classification", cls)
        if copc:
            output = copc_io.write(out_dir / (path.name[: -len(path.suffix)].removesuffix(".copc") + ".copc.laz"), own)
        else:
            output = las.write(out_dir / path.name, own)
        values, counts = np.unique(cls, return_counts=True)
        yield path, {"points": n, "classes": {int(v): int(c) for v, c in zip(values, counts)}, "output": output}
