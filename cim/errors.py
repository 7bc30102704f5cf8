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


class LimitError(CimError):
    """A job would exceed a safety limit (tiles, raster cells per tile, disk space): names the key and the limit."""


def os_error_message(exc: OSError, what: str | Path | None = None) -> str | None:
    """One line for the OS errors a user can act on (disk full, read-only, permission, missing), else None.

    ``what`` names the file when the exception does not; a short write's byte counts are kept as the bytes needed.
    """
    import errno
    import re

    where = f"{exc.filename or what}: " if exc.filename or what else ""
    short_write = re.search(r"(\d+) requested and (\d+) written", str(exc))
    if exc.errno == errno.ENOSPC or short_write:
        need = f" ({int(short_write[1]) - int(short_write[2]):,} more bytes needed)" if short_write else ""
        return f"{where}disk full: no space left on the device{need}; free space or choose another --out"
    messages = {
        errno.EROFS: "read-only file system; choose a writable --out",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EDQUOT: "disk quota exceeded",
        errno.EEXIST: "a file is in the way of a folder (or the other way round)",
        errno.ENOTDIR: "a file is in the way of a folder (or the other way round)",
        errno.ENOENT: "no such file or folder",
    }
    return f"{where}{messages[exc.errno]}" if exc.errno in messages else None
