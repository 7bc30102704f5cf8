"""The run manifest: an append-only JSON-lines record of finished tasks, their fingerprints and results.

Only the driver process writes it, one line per finished task, flushed to the operating system before the next
task is recorded, so a run killed at any moment leaves a manifest whose complete lines are all true; a torn last
line is ignored when it is read back. Lines are not forced to the disk one by one (an fsync per task cost 14 ms
each on a busy disk, in the driver that schedules the tasks): like the products, which are not fsync'd either,
they survive a killed process, not a power cut.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def fingerprint(*parts: Any) -> str:
    """A stable SHA-256 of JSON-able parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Manifest:
    """Finished tasks of one output folder, keyed by task key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                self._entries[entry["key"]] = entry

    def finished(self, key: str, task_fingerprint: str) -> dict[str, Any] | None:
        """The recorded entry when ``key`` finished with this fingerprint, else None."""
        entry = self._entries.get(key)
        if entry is not None and entry["fingerprint"] == task_fingerprint:
            return entry
        return None

    def record(self, key: str, task_fingerprint: str, result: Any, seconds: float) -> None:
        """Append a finished task (in the file, for any later reader, before this returns)."""
        entry = {"key": key, "fingerprint": task_fingerprint, "result": result, "seconds": round(seconds, 3)}
        self._entries[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
