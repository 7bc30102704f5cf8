"""The ``cim`` command: a thin layer over the library. Command groups live in sibling modules that expose
``register(app)``; they are discovered automatically.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import traceback
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cim.errors import CimError, CimWarning, os_error_message

app = typer.Typer(
    name="cim",
    help="City Information Modeling: point clouds, terrain, buildings and panoramas to a georeferenced digital twin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

#: Exit codes: 0 success, 1 a job ran but some tasks failed (or a bug), 2 bad input / bad job (nothing done).
EXIT_TASKS_FAILED = 1
EXIT_BAD_INPUT = 2
#: A bug: the traceback is in the job's cim.log (or on stderr); reported as failed work, not as bad input.
EXIT_UNEXPECTED = 1


def _load_commands() -> None:
    import cim.cli as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name in ("app", "__main__"):
            continue
        loaded = importlib.import_module(f"cim.cli.{module.name}")
        if hasattr(loaded, "register"):
            loaded.register(app)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    if issubclass(category, CimWarning):
        err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}", soft_wrap=True)
    else:
        logging.getLogger("cim").debug("%s: %s", category.__name__, message)


def _error_line(exc: CimError) -> str:
    """The error as one line where it has one problem (a job file's single problem is folded onto its line)."""
    problems = getattr(exc, "problems", None)
    if problems and len(problems) == 1:
        return f"{exc.source}: {problems[0].key_path}: {problems[0].problem}"
    return str(exc)


def _log_file() -> str | None:
    """The file the job's log handler writes (``<out>/cim.log``), when ``cim run`` opened one."""
    handlers = logging.getLogger("cim").handlers
    return next((h.baseFilename for h in handlers if isinstance(h, logging.FileHandler)), None)


def _out_dir() -> str | None:
    """The job's output folder (where its log is), to name where a disk filled up."""
    log_file = _log_file()
    return str(Path(log_file).parent) if log_file else None


def _unexpected(exc: BaseException) -> str:
    """Record the traceback of a bug in the job's log (else on stderr) and return the line that says where."""
    log_file = _log_file()
    if log_file is not None:
        try:
            logging.getLogger("cim").error("unexpected error", exc_info=exc)
            return f"unexpected error ({type(exc).__name__}: {exc}); the traceback is in {log_file}"
        except OSError:
            pass
    sys.stderr.write("".join(traceback.format_exception(exc)))
    return f"unexpected error ({type(exc).__name__}: {exc}); the traceback is above"


def fail(exc: BaseException) -> int:
    """Print the one line for an exception that reached the CLI; returns the exit code: 2 for bad input and
    for OS errors the user can act on (disk full, read-only, permission), 1 for a bug (unexpected error)."""
    code = EXIT_BAD_INPUT
    if isinstance(exc, CimError):
        line = _error_line(exc)
    elif isinstance(exc, OSError) and os_error_message(exc, _out_dir()):
        line = os_error_message(exc, _out_dir())
    else:
        line, code = _unexpected(exc), EXIT_UNEXPECTED
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return code


def main() -> None:
    """Entry point: run the CLI, turning every exception into one clear line (exit code 2; 1 for a bug), never a
    traceback."""
    warnings.showwarning = _show_warning
    logging.raiseExceptions = False  # a log that cannot be written (disk full) must not print tracebacks
    _load_commands()
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the CLI's one error path
        sys.exit(fail(exc))


if __name__ == "__main__":
    main()
