"""Stage modules: each holds the stage classes of one area (io, terrain, buildings, tiles, panoramas).

Stages are registered as entry points of the group ``cim.stages`` in ``pyproject.toml`` (see
:mod:`cim.pipeline.stage`), so a job imports only the modules of the stages it names (the terrain and buildings
modules pull in scipy, rasterio, shapely: ~0.5 s and ~60 MB that a ``cim tiles`` run need not pay).
"""
