"""What a task's fingerprint is made of besides its options: file contents, product checksums and the code.

- :class:`ContentHashes`: SHA-256 of files a task reads, cached by (inode, size, mtime) in a JSON file of the
  work folder, so a re-run does not re-read terabytes of unchanged inputs.
- :func:`stamp` / :func:`intact`: size, mtime and SHA-256 of the products a task wrote, and the check that they
  are still what the task wrote (a truncated or edited product is re-made).
- :func:`code_hash`: a hash of the source of a cim module and of every cim module it imports (transitively),
  plus the versions of the native libraries the results depend on.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cim.fileutil import write_text_atomic

_BLOCK = 1 << 22


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class ContentHashes:
    """Content hashes of files, cached by (inode, size, mtime_ns) in ``cache`` (None: in memory only)."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache
        self._entries: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        if cache is not None and cache.is_file():
            try:
                self._entries = json.loads(cache.read_text())
            except json.JSONDecodeError:
                self._entries = {}  # a damaged cache only costs re-reading

    def digest(self, path: str | Path) -> str:
        """The SHA-256 of ``path`` (from the cache while the file's inode, size and mtime are unchanged)."""
        resolved = str(Path(path).resolve())
        stat = os.stat(resolved)
        identity = [stat.st_ino, stat.st_size, stat.st_mtime_ns]
        with self._lock:
            entry = self._entries.get(resolved)
        if entry is not None and entry[:3] == identity:
            return entry[3]
        value = sha256_file(resolved)
        with self._lock:
            self._entries[resolved] = [*identity, value]
        return value

    def digests(self, paths: list[str | Path]) -> list[str]:
        """:meth:`digest` of many files, read in parallel (hashlib releases the GIL)."""
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(self.digest, paths))

    def save(self) -> None:
        """Write the cache (atomically) when it has a file."""
        if self.cache is not None:
            with self._lock:
                text = json.dumps(self._entries, sort_keys=True)
            write_text_atomic(self.cache, text)


def stamp(paths: list[str], out_dir: str | Path) -> dict[str, list[Any]]:
    """{path: [size, mtime_ns, sha256]} of files written by a task (paths relative to ``out_dir``)."""
    stamps = {}
    for rel in paths:
        full = Path(out_dir) / rel
        if full.is_file():
            stat = full.stat()
            stamps[rel] = [stat.st_size, stat.st_mtime_ns, sha256_file(full)]
    return stamps


def intact(result: Any, out_dir: Path | None) -> bool:
    """Whether every output a recorded result lists still exists and, where it was stamped, is unchanged
    (same size, and same mtime or same content)."""
    if out_dir is None or not isinstance(result, dict):
        return True
    stamps = result.get("stamps", {})
    for rel in result.get("outputs", []):
        full = out_dir / rel
        if not full.exists():
            return False
        if rel in stamps:
            size, mtime, digest = stamps[rel]
            stat = full.stat()
            if stat.st_size != size or (stat.st_mtime_ns != mtime and sha256_file(full) != digest):
                return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# code


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes the products: laspy, lazrs, GEOS and PROJ."""
    from importlib.metadata import PackageNotFoundError, version

    import pyproj
    import shapely

    found = {}
    for name in ("laspy", "lazrs"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    found["geos"] = ".".join(str(v) for v in shapely.geos_version)
    found["proj"] = pyproj.proj_version_str
    return found


def module_source(name: str) -> bytes:
    """The source of module ``name`` (b"" when it has no source file). Tests replace it to simulate edits."""
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    return Path(origin).read_bytes() if origin and origin.endswith(".py") else b""


def _cim_imports(name: str, source: bytes) -> set[str]:
    """The cim modules that ``source`` (module ``name``) imports by name."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(source)
    typing_only = {id(n) for block in tree.body if _is_type_checking(block) for n in ast.walk(block)}  # module level
    for node in ast.walk(tree):
        if id(node) in typing_only:  # ``if TYPE_CHECKING:`` imports are no run-time dependency
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names if _exists(f"{base}.{alias.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in ``base`` itself, not only its submodules
                found.add(base)
    return {m for m in found if m.split(".")[0] == "cim" and _exists(m)}


def _is_type_checking(node: ast.AST) -> bool:
    """Whether ``node`` is an ``if TYPE_CHECKING:`` block (``typing.TYPE_CHECKING`` included)."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or
                                         isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return bool(spec and spec.submodule_search_locations)


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class CodeHashes:
    """Hashes of cim modules with everything they import within cim (one instance per run: sources are read once)."""

    def __init__(self) -> None:
        self._sources: dict[str, bytes] = {}
        self._imports: dict[str, set[str]] = {}  # each module parsed once per run
        self._hashes: dict[str, str] = {}
        self._versions = library_versions()

    def _source(self, name: str) -> bytes:
        if name not in self._sources:
            self._sources[name] = module_source(name)
        return self._sources[name]

    def _imported(self, name: str) -> set[str]:
        if name not in self._imports:
            self._imports[name] = _cim_imports(name, self._source(name))
        return self._imports[name]

    def closure(self, name: str) -> list[str]:
        """``name`` and the cim modules it imports, directly or not, sorted."""
        seen, todo = set(), [name]
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(self._imported(module) - seen)
        return sorted(seen)

    def code_hash(self, name: str) -> str:
        """Hash of the sources of :meth:`closure` of ``name`` plus :func:`library_versions`."""
        if name not in self._hashes:
            digest = hashlib.sha256(json.dumps(self._versions, sort_keys=True).encode())
            for module in self.closure(name):
                digest.update(module.encode() + b"\0" + hashlib.sha256(self._source(module)).digest())
            self._hashes[name] = digest.hexdigest()[:32]
        return self._hashes[name]
