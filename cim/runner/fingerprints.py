"""What a task's fingerprint is made of besides its options: file contents, product checksums and the code.

- :class:`ContentHashes`: SHA-256 of files a task reads, cached by (inode, size, mtime) in a JSON file of the
  work folder, so a re-run does not re-read terabytes of unchanged inputs.
- :func:`stamp` / :func:`intact`: size, mtime and SHA-256 of the products a task wrote, and the check that they
  are still what the task wrote (a truncated or edited product is re-made).
- :class:`CodeHashes`: a hash of the source of a cim module and of every cim module it imports (transitively),
  plus the versions of the native libraries the results depend on. Each source is parsed once per process.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

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


def _module_file(name: str) -> Path | None:
    """The source file of cim module ``name`` (None for other modules and names that are not a module); found
    without importing anything (``importlib.util.find_spec`` imports the parent packages)."""
    import cim

    parts = name.split(".")
    if parts[0] != "cim":
        return None
    folder = Path(cim.__file__).parent.joinpath(*parts[1:])
    for candidate in (folder / "__init__.py", folder.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_source(name: str) -> bytes:
    """The source of cim module ``name`` (b"" when it has none). Tests replace it to simulate edits."""
    path = _module_file(name)
    return path.read_bytes() if path is not None else b""


#: An import statement as written: (module, level, names); names None for ``import module``.
RawImport = tuple[str, int, Optional[list[str]]]

#: The import statements of a source by its SHA-256, parsed in this process or read from cache files
#: (:class:`CodeHashes`); the cache files read so far.
_PARSED: dict[str, list[RawImport]] = {}
_LOADED: set[Path] = set()

#: The name of the cache file of parsed import statements in a job's work folder (the number: its format).
CODE_IMPORTS = "code-imports-1.json"


def _load_parsed(cache: Path) -> None:
    """Take the parsed import statements kept in ``cache`` (once per process; any damage only costs parsing)."""
    if cache in _LOADED:
        return
    _LOADED.add(cache)
    try:
        _PARSED.update(json.loads(cache.read_text()))
    except (OSError, ValueError):
        pass


def _raw_imports(source: bytes) -> tuple[list[RawImport], bool]:
    """The import statements of ``source`` (outside ``if TYPE_CHECKING:`` blocks), and whether they were parsed now
    (parsing cim's sources with ``ast`` is most of the cost of a code hash: 0.1 s a job)."""
    key = hashlib.sha256(source).hexdigest()
    if key in _PARSED:
        return _PARSED[key], False
    found: list[RawImport] = []
    for node in _import_statements(ast.parse(source).body):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0, None) for alias in node.names)
        else:
            found.append((node.module or "", node.level, [alias.name for alias in node.names]))
    _PARSED[key] = found
    return found, True


def _save_parsed(cache: Path) -> None:
    """Write the parsed import statements to ``cache`` (the newest 4096 sources); a failure is no error."""
    entries = list(_PARSED.items())[-4096:]
    try:
        write_text_atomic(cache, json.dumps(dict(entries)))
    except OSError:
        pass


def _import_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements in ``body`` and the blocks nested in it, except ``if TYPE_CHECKING:`` blocks (no
    run-time dependency). Imports are statements: expressions need not be walked."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        blocks = [getattr(node, field, None) or [] for field in ("body", "orelse", "finalbody")]
        if _is_type_checking(node):
            blocks = blocks[1:]
        blocks += [handler.body for handler in getattr(node, "handlers", [])]
        blocks += [case.body for case in getattr(node, "cases", [])]
        for block in blocks:
            yield from _import_statements(block)


def _is_type_checking(node: ast.AST) -> bool:
    """Whether ``node`` is an ``if TYPE_CHECKING:`` block (``typing.TYPE_CHECKING`` included)."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or
                                         isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


#: Runner modules that stages import for a base class (item stages: ``ItemStage``): they plan, run and record the
#: work and shape no product, like the rest of the runner, which no stage imports. Through them a stage's code hash
#: took in the catalog and the task runner: editing those re-ran every panorama.
RUNNER_MODULES = frozenset({"cim.pipeline.items"})


class CodeHashes:
    """Hashes of cim modules with everything they import within cim (one instance per run: sources are read once;
    the import statements of a source are parsed once per process, and kept by content in ``cache``, a job's
    ``.cim/code-imports-1.json``, for its next runs: a resume does not parse cim again; None: not kept)."""

    def __init__(self, cache: Path | None = None) -> None:
        self._cache = cache
        if cache is not None:
            _load_parsed(cache)
        self._sources: dict[str, bytes] = {}
        self._imports: dict[str, frozenset[str]] = {}
        self._files: dict[str, Path | None] = {}
        self._hashes: dict[str, str] = {}
        self._versions = json.dumps(library_versions(), sort_keys=True)
        self._parsed_now = False

    def _source(self, name: str) -> bytes:
        if name not in self._sources:
            self._sources[name] = module_source(name)
        return self._sources[name]

    def _file(self, name: str) -> Path | None:
        if name not in self._files:
            self._files[name] = _module_file(name)
        return self._files[name]

    def _imported(self, name: str) -> frozenset[str]:
        """The cim modules that module ``name`` imports by name."""
        if name not in self._imports:
            raw, parsed = _raw_imports(self._source(name))
            self._parsed_now |= parsed
            file = self._file(name)
            package = name if file is not None and file.name == "__init__.py" else name.rpartition(".")[0]
            found: set[str] = set()
            for module, level, names in raw:
                if names is None:
                    found.add(module)
                    continue
                if level:
                    parts = package.split(".")
                    module = ".".join(parts[: len(parts) - level + 1] + ([module] if module else []))
                submodules = {f"{module}.{n}" for n in names if self._file(f"{module}.{n}") is not None}
                found.update(submodules)
                if len(submodules) < len(names):  # names defined in ``module`` itself, not only its submodules
                    found.add(module)
            self._imports[name] = frozenset(m for m in found if self._file(m) is not None)
        return self._imports[name]

    def closure(self, name: str) -> list[str]:
        """``name`` and the cim modules it imports, directly or not, sorted; the walk does not enter
        :data:`RUNNER_MODULES`."""
        seen, todo = set(), [name]
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(self._imported(module) - seen - RUNNER_MODULES)
        return sorted(seen)

    def code_hash(self, name: str) -> str:
        """Hash of the sources of :meth:`closure` of ``name`` plus :func:`library_versions`."""
        if name not in self._hashes:
            closure = self.closure(name)
            if self._parsed_now and self._cache is not None:
                _save_parsed(self._cache)
                self._parsed_now = False
            digest = hashlib.sha256(self._versions.encode())
            for module in closure:
                digest.update(module.encode() + b"\0" + hashlib.sha256(self._source(module)).digest())
            self._hashes[name] = digest.hexdigest()[:32]
        return self._hashes[name]
