"""Stage modules: each holds the stage classes of one area (io, terrain, buildings, tiles, panoramas).

Stages are registered as entry points of the group ``cim.stages`` in ``pyproject.toml`` (see
:mod:`cim.pipeline.stage`), so a job imports only the modules of the stages it names. Those modules are light:
the driver imports them to validate the options; the libraries a stage's work needs (scipy, rasterio, shapely,
cv2: ~0.5 s and ~60 MB) are imported by the methods that run it and named in its ``worker_imports``, which the
worker processes import once (:func:`cim.pipeline.stage.worker_modules`).
"""
