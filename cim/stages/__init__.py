"""Stage modules. Each module registers its stages with :func:`cim.pipeline.stage.register` when imported."""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    """Import every stage module in this package (idempotent)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
