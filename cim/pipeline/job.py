"""Job descriptions in TOML, validated completely before any work starts.

```toml
[job]
name = "demo"
output = "../out/demo"          # relative paths resolve against the job file's folder
crs = "EPSG:7415"               # optional: overrides the inputs' CRS (needed when a file declares none)
output_crs = "EPSG:28992+5709"  # optional: process and write in this CRS (exact transformations only)

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

Validation also wires the stages' artefacts (:class:`cim.pipeline.stage.Stage` ``produces`` / ``consumes`` /
``reuses``): each consumer gets the folder of the earlier stage producing what it needs. A consumer without a
producer or with two, or two stages writing one folder, is a problem of the job, reported before any work.
"""

from __future__ import annotations

import difflib
import glob
import posixpath
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cim import crs as crs_mod
from cim.errors import CimError, ConfigError
from cim.guards import MAX_TILE_CELLS, MAX_TILES, folder_problem, option_problems
from cim.pipeline.stage import NO_STAGES, Stage, StageOptions, lookup, registry, stage_names


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
    output_crs: str | None = None
    area: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    max_tiles: int = Field(MAX_TILES, gt=0)
    max_tile_cells: float = Field(MAX_TILE_CELLS, gt=0)
    accept_height_system: Literal["DHHN92-as-DHHN2016"] | None = None  # cim.crs_plan.DHHN92_AS_DHHN2016

    @field_validator("output_crs")
    @classmethod
    def _known_crs(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                crs_mod.resolve(value)
            except CimError as exc:
                raise ValueError(str(exc)) from None
        return value


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
    #: CRS the job processes and writes in (None: the inputs' CRS); ``area`` is given in it.
    output_crs: str | None = None
    accept_height_system: str | None = None
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
    return parse_job(read_job_document(path), Path(path), overrides)


def read_job_document(path: str | Path) -> dict[str, Any]:
    """A job file's TOML document, not yet validated (:func:`parse_job` does that)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("job", "file not found", path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("job", f"not valid TOML ({exc})", path) from None


def declared_stage_names(document: dict[str, Any]) -> list[str]:
    """The stage types a job document names, unvalidated (to start the workers' imports while it is validated)."""
    tables = document.get("stages")
    return [t["type"] for t in tables if isinstance(t, dict) and isinstance(t.get("type"), str)] \
        if isinstance(tables, list) else []


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
        output_crs=section.output_crs,
        accept_height_system=section.accept_height_system,
        max_tiles=section.max_tiles,
        max_tile_cells=section.max_tile_cells,
    )


def _parse_stages(raw: Any, base: Path, problems: list[ConfigError]) -> list[Stage]:
    if not isinstance(raw, list) or not raw:
        problems.append(ConfigError("stages", "a job needs a list of [[stages]]"))
        return []
    if not stage_names():
        problems.append(ConfigError("stages", NO_STAGES))
        return []
    stages: list[Stage] = []
    keys: list[str] = []
    for i, table in enumerate(raw):
        key = f"stages[{i}]"
        if not isinstance(table, dict) or "type" not in table:
            problems.append(ConfigError(key, "each stage needs a 'type', e.g. type = \"read.las\""))
            continue
        name = table["type"]
        try:
            cls = lookup(str(name))
        except CimError as exc:
            problems.append(ConfigError(f"{key}.type", str(exc)))
            continue
        if cls is None:
            hint = difflib.get_close_matches(str(name), stage_names(), n=1)
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
        keys.append(key)
    _check_order(stages, problems)
    _check_folders(stages, keys, problems)
    _wire_artefacts(stages, keys, problems)
    _label(stages)
    problems += [ConfigError(f"{key}.{option}", problem) for stage, key in zip(stages, keys)
                 for option, problem in stage.check()]
    return stages


def _label(stages: list[Stage]) -> None:
    """Give the stages their labels (:attr:`Stage.label`): ``NN-name``, NN counting the tile stages, or for an item
    stage its place in the job."""
    for i, stage in enumerate(s for s in stages if s.role == "tile"):
        stage.label = f"{i:02d}-{stage.name}"
    for i, stage in enumerate(stages):
        if stage.role == "items":
            stage.label = f"{i:02d}-{stage.name}"


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
    kinds = [s.role for s in stages]
    if "reader" not in kinds:
        if kinds and set(kinds) == {"items"}:  # a job of item stages only (cim.pipeline.items) reads no points
            return
        first = next((i for i, k in enumerate(kinds) if k != "items"), None)
        key, what = ("stages", "") if first is None else (f"stages[{first}]", f"{stages[first].name} works on points: ")
        problems.append(ConfigError(key, f"{what}a job needs a reader stage such as read.las"))
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


def _check_folders(stages: list[Stage], keys: list[str], problems: list[ConfigError]) -> None:
    """Each stage's folder lies inside the output folder and belongs to that stage alone."""
    owner: dict[str, str] = {}
    for stage, key in zip(stages, keys):
        if not stage.folder:
            continue
        folder = posixpath.normpath(stage.folder.replace("\\", "/"))
        if problem := folder_problem(stage.folder):
            problems.append(ConfigError(f"{key}.folder", problem))
        elif folder in owner:
            problems.append(ConfigError(f"{key}.folder", f"{stage.name} writes into {folder!r}, like {owner[folder]}; "
                                                         "give each stage its own folder"))
        else:
            owner[folder] = f"{stage.name} ({key})"


def _wire_artefacts(stages: list[Stage], keys: list[str], problems: list[ConfigError]) -> None:
    """Give every consumer the folder of the earlier stage producing each artefact it consumes or reuses.

    Several stages may produce one artefact (two ``write.las`` copies, say) as long as no stage reads it: a
    consumer after two producers would not know which to read.
    """
    producers: dict[str, list[tuple[Stage, str]]] = {}
    for stage, key in zip(stages, keys):
        for artefact in stage.consumes + stage.reuses:
            found = producers.get(artefact, [])
            if len(found) == 1:
                stage.inputs[artefact] = found[0][0].folder
                stage.uses = tuple(dict.fromkeys((*stage.uses, found[0][0].name)))
            elif found:
                names = " and ".join(f"{s.name} ({k})" for s, k in found)
                problems.append(ConfigError(key, f"{stage.name} reads {artefact!r}, which {names} all produce: "
                                                 "keep one producer before it"))
            elif artefact in stage.consumes:
                problems.append(ConfigError(key, _no_producer(stage, artefact, stages, keys)))
        for artefact in stage.produces:
            producers.setdefault(artefact, []).append((stage, key))


def _no_producer(stage: Stage, artefact: str, stages: list[Stage], keys: list[str]) -> str:
    """The problem of a consumer without an earlier producer, with what would fix it."""
    later = [f"{s.name} ({k})" for s, k in zip(stages, keys) if artefact in s.produces]
    if later:
        return f"{stage.name} consumes {artefact!r}, but {later[0]} produces it later: put that stage first"
    makers = [name for name, cls in registry().items() if artefact in cls.produces]
    hint = f" (add {' or '.join(makers)} before it)" if makers else ""
    return f"{stage.name} consumes {artefact!r} but no stage produces it{hint}"
