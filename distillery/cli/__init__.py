"""The `distillery` command: a typer app over distillery.client, plus the service's own commands.

`main()` is the entry point ([project.scripts] and `python -m distillery.cli`): typer handles usage errors
(exit 2), Ctrl-C and closed pipes; every error of ours becomes its message on stderr and the documented exit
code (distillery.cli.base), never a traceback.
"""

from __future__ import annotations

import sys

from distillery.cli import demo, jobs, server  # noqa: F401  (each registers its commands on `app`)
from distillery.cli.base import GAVE_UP, SERVER, USAGE, CliError, app
from distillery.errors import DistilleryError, WaitTimeout

__all__ = ["app", "main"]


def exit_code(error: DistilleryError) -> int:
    if isinstance(error, WaitTimeout):
        return GAVE_UP
    return USAGE if error.is_client_error else SERVER


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="distillery")  # standalone: ends with sys.exit
    except DistilleryError as exc:
        _fail(f"error: {exc}" + (f" [{exc.code}]" if exc.status else ""), exit_code(exc))
    except CliError as exc:
        _fail(f"error: {exc}", exc.exit_code)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(message + "\n")
    sys.exit(code)
