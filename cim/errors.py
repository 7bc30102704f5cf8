"""Errors and warnings that cim reports to its users."""

from __future__ import annotations

from pathlib import Path


class CimError(Exception):
    """Base class of every error cim reports to a user (the CLI prints it without a traceback)."""


class InputError(CimError):
    """A problem with one input file: the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple:  # keep (path, problem) across process boundaries (Dask workers)
        return (type(self), (self.path, self.problem))


class ConfigError(CimError):
    """A problem in a job description: the message names the key path and the problem."""

    def __init__(self, key_path: str, problem: str, source: str | Path | None = None) -> None:
        self.key_path = key_path
        self.problem = problem
        prefix = f"{source}: " if source else ""
        self.source = source
        super().__init__(f"{prefix}{key_path}: {problem}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.key_path, self.problem, self.source))


class CrsError(CimError):
    """A coordinate reference system is missing, contradictory or cannot be transformed exactly."""


class CimWarning(UserWarning):
    """A warning cim shows to its users (loud vertical fallbacks, repaired footprints, ...)."""
