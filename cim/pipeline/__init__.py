"""Pipelines of named stages described in TOML, planned into Dask tasks per (stage, tile)."""
