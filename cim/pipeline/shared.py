"""Job-wide values that every task's arguments name, shipped to the workers by reference.

Dask pickles each task's arguments on their own, and the driver (client and scheduler) holds them while the task
lives: a list the size of the job (its input files) in every task's arguments made the driver's memory grow with
tasks x inputs (measured: 2,000 tasks each naming 784 input paths, +289 MB, against +26 MB without them). A
:func:`shared_strings` tuple is written once into the work folder, which every worker reads (see
:func:`cim.runner.check_shared_storage`), and pickles as that file's path and digest: each worker process reads
it once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from cim.errors import InputError
from cim.fileutil import atomic_write


class SharedStrings(tuple):
    """A tuple of strings kept in a JSON file; pickles as (path, digest) of that file."""

    path: str
    digest: str

    def __reduce__(self) -> tuple:
        return (_load, (self.path, self.digest))


def shared_strings(path: Path, items: Iterable[str]) -> tuple[str, ...]:
    """``items`` as a :class:`SharedStrings` kept in ``path`` (written atomically when it differs)."""
    text = json.dumps(list(items))
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            tmp.write_text(text)
    return _shared(json.loads(text), str(path), hashlib.sha256(text.encode()).hexdigest()[:16])


def _shared(items: list[str], path: str, digest: str) -> SharedStrings:
    value = SharedStrings(items)
    value.path, value.digest = path, digest
    return value


@functools.lru_cache(maxsize=8)
def _load(path: str, digest: str) -> SharedStrings:
    """The tuple kept in ``path`` (once per process and digest: a re-run that changed it has another digest)."""
    text = Path(path).read_text()
    if hashlib.sha256(text.encode()).hexdigest()[:16] != digest:
        raise InputError(path, "changed while the job ran")
    return _shared(json.loads(text), path, digest)
