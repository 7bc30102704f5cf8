"""The ``cim`` command: a thin layer over the library. Command groups live in sibling modules that expose
``register(app)``; they are discovered automatically.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from cim.errors import CimError, CimWarning

app = typer.Typer(
    name="cim",
    help="City Information Modeling: point clouds, terrain, buildings and panoramas to a georeferenced digital twin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

#: Exit codes: 0 success, 1 a job ran but some tasks failed, 2 bad input / bad job (nothing or little done).
EXIT_TASKS_FAILED = 1
EXIT_BAD_INPUT = 2


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
        err_console.print(f"[bold yellow]warning:[/] {message}")
    else:
        logging.getLogger("cim").debug("%s: %s", category.__name__, message)


def main() -> None:
    """Entry point: run the CLI, turning every CimError into one clear line and exit code 2."""
    warnings.showwarning = _show_warning
    _load_commands()
    try:
        app()
    except CimError as exc:
        # escaped and unwrapped: a message naming e.g. "cim[csf]" or a long path stays one literal line
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
