"""Job descriptions in TOML, validated completely before any work starts.

```toml
[job]
name = "demo"
output = "../out/demo"          # relative paths resolve against the job file's folder
crs = "EPSG:7415"               # optional: overrides the inputs' CRS (needed when a file declares none)

[[stages]]
type = "read.las"
files = ["../data/delft/*.laz"]

[[stages]]
type = "tile"
size = 250.0
buffer = 20.0

[[stages]]
type = "write.las"
```

Every problem (unknown key, wrong type, unknown stage, missing file) becomes one line naming its key path.
"""

from __future__ import annotations

import difflib
import glob
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cim.errors import CimError, ConfigError
from cim.guards import MAX_TILE_CELLS, MAX_TILES, option_problems
from cim.pipeline.stage import Stage, StageOptions, lookup, registry


class JobConfigError(CimError):
    """All problems found in a job file, one line each."""

    def __init__(self, source: str | Path, problems: list[ConfigError]) -> None:
        self.source = str(source)
        self.problems = problems
        lines = "\n".join(f"  {p.key_path}: {p.problem}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the job description:\n{lines}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.source, self.problems))


class JobSection(BaseModel):
    """The ``[job]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = "job"
    output: str = "out"
    crs: str | None = None
    area: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    max_tiles: int = Field(MAX_TILES, gt=0)
    max_tile_cells: float = Field(MAX_TILE_CELLS, gt=0)


@dataclass
class Job:
    """A validated job: its settings, the stage objects in order, and where it was read from."""

    source: Path
    name: str
    out_dir: Path
    crs: str | None
    area: tuple[float, float, float, float] | None
    datetime: str | None
    stages: list[Stage]
    max_tiles: int = MAX_TILES
    max_tile_cells: float = MAX_TILE_CELLS

    def stages_of(self, name: str) -> list[Stage]:
        return [s for s in self.stages if s.name == name]


def _pydantic_problems(exc: ValidationError, prefix: str) -> list[ConfigError]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{prefix}.{loc}" if loc else prefix
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(ConfigError(key, message))
    return problems


def load_job(path: str | Path, overrides: dict[str, Any] | None = None) -> Job:
    """Read and validate a job file; ``overrides`` replace ``[job]`` keys (the CLI's --out, --crs)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("job", "file not found", path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("job", f"not valid TOML ({exc})", path) from None
    return parse_job(document, path, overrides)


def parse_job(document: dict[str, Any], source: Path, overrides: dict[str, Any] | None = None) -> Job:
    """Validate a parsed job document (see :func:`load_job`)."""
    problems: list[ConfigError] = []
    base = source.parent
    for key in document:
        if key not in ("job", "stages"):
            problems.append(ConfigError(key, "unknown table (expected [job] and [[stages]])"))
    section = JobSection()
    try:
        section = JobSection(**{**document.get("job", {}), **{k: v for k, v in (overrides or {}).items() if v}})
    except ValidationError as exc:
        problems += _pydantic_problems(exc, "job")
    stages = _parse_stages(document.get("stages", []), base, problems)
    if problems:
        raise JobConfigError(source, problems)
    return Job(
        source=source,
        name=section.name,
        out_dir=(base / section.output).resolve(),
        crs=section.crs,
        area=section.area,
        datetime=section.datetime,
        stages=stages,
        max_tiles=section.max_tiles,
        max_tile_cells=section.max_tile_cells,
    )


def _parse_stages(raw: Any, base: Path, problems: list[ConfigError]) -> list[Stage]:
    if not isinstance(raw, list) or not raw:
        problems.append(ConfigError("stages", "a job needs a list of [[stages]]"))
        return []
    stages: list[Stage] = []
    for i, table in enumerate(raw):
        key = f"stages[{i}]"
        if not isinstance(table, dict) or "type" not in table:
            problems.append(ConfigError(key, "each stage needs a 'type', e.g. type = \"read.las\""))
            continue
        name = table["type"]
        cls = lookup(str(name))
        if cls is None:
            hint = difflib.get_close_matches(str(name), list(registry()), n=1)
            problems.append(
                ConfigError(f"{key}.type", f"unknown stage {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
            )
            continue
        options = {k: v for k, v in table.items() if k != "type"}
        try:
            parsed: StageOptions = cls.Options(**_resolve_paths(cls.Options, options, base))
        except ValidationError as exc:
            problems += _pydantic_problems(exc, key)
            continue
        problems += _missing_files(parsed, key) + option_problems(parsed, key)
        stages.append(cls(parsed))
    _check_order(stages, problems)
    return stages


def _resolve_paths(model: type[StageOptions], options: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the values of path-like options (names listed in ``model.path_fields``) relative to ``base``."""
    fields = getattr(model, "path_fields", ())
    resolved = dict(options)
    for name in fields:
        value = resolved.get(name)
        if isinstance(value, str):
            resolved[name] = str(base / value) if value else value
        elif isinstance(value, list):
            resolved[name] = [str(base / v) if isinstance(v, str) else v for v in value]
    return resolved


def _missing_files(options: StageOptions, key: str) -> list[ConfigError]:
    problems = []
    for name in getattr(options, "path_fields", ()):
        if name in getattr(options, "output_fields", ()):
            continue
        value = getattr(options, name, None)
        patterns = value if isinstance(value, list | tuple) else [value] if value else []
        for j, pattern in enumerate(patterns):
            if not glob.glob(str(pattern)):
                where = f"{key}.{name}[{j}]" if isinstance(value, list | tuple) else f"{key}.{name}"
                problems.append(ConfigError(where, f"no file matches {pattern}"))
    return problems


def _check_order(stages: list[Stage], problems: list[ConfigError]) -> None:
    kinds = [getattr(s, "role", "tile") for s in stages]
    if "reader" not in kinds:
        problems.append(ConfigError("stages", "a job needs a reader stage such as read.las"))
        return
    last_reader = max(i for i, k in enumerate(kinds) if k == "reader")
    first_other = next((i for i, k in enumerate(kinds) if k != "reader"), len(kinds))
    if first_other < last_reader:
        problems.append(ConfigError(f"stages[{last_reader}]", "readers must come before all other stages"))
    tilers = [i for i, k in enumerate(kinds) if k == "tiler"]
    if len(tilers) > 1:
        problems.append(ConfigError(f"stages[{tilers[1]}]", "only one tile stage is allowed"))
    if tilers and tilers[0] != last_reader + 1:
        problems.append(ConfigError(f"stages[{tilers[0]}]", "the tile stage must follow the readers"))
