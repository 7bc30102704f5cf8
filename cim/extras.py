"""Optional dependencies: importing one that is missing names the extra that installs it, in one line."""

from __future__ import annotations

import importlib
from types import ModuleType

from cim.errors import CimError


class MissingExtraError(CimError, ImportError):
    """An optional package is not installed; the message says which ``pip install`` brings it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra ``cim[extra]`` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs the optional package {module.split('.')[0]!r}: "
                                f"pip install 'cim[{extra}]'") from None
