"""The typer app, its global options and the exit codes every command shares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

import typer

from distillery._common import DEFAULT_URL
from distillery.client import Client

# Exit codes scripts can test (also in `distillery --help` and the README).
OK = 0
JOB_NOT_SUCCEEDED = 1  # waited for a job that failed or was cancelled
USAGE = 2  # a bad command line or spec, or the API refused the request (4xx)
SERVER = 3  # no answer, or the service failed (5xx)
GAVE_UP = 4  # --timeout passed before the job finished (it goes on running)

HELP = f"""Knowledge distillation as a service: submit and follow jobs, download students, run the service.

Client commands talk to the API at --url with --api-key; service commands (serve, migrate, keys, tenants)
work on this machine's database and settings (DISTILLERY_DATABASE_URL …).

Exit codes: {OK} done; {JOB_NOT_SUCCEEDED} the job waited for failed or was cancelled; {USAGE} bad usage, spec or
request (the API's 4xx: its message is printed); {SERVER} the service is unreachable or failed (5xx);
{GAVE_UP} --timeout passed before the job finished.
"""

app = typer.Typer(
    name="distillery",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a traceback must never print the API key
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)


class CliError(Exception):
    """A problem on this side (a spec that cannot be read, a missing file): message on stderr, exit 2."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Options:
    url: str
    api_key: str | None
    json: bool

    def client(self) -> Client:
        return Client(self.url, self.api_key)


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option("--url", envvar="DISTILLERY_URL", help="The API's base URL.", show_envvar=True)
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="DISTILLERY_API_KEY",
            help="API key (Authorization: Bearer). Prefer the environment variable: arguments show in `ps`.",
            show_envvar=True,
            show_default=False,
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    ctx.obj = Options(url=url.rstrip("/"), api_key=api_key, json=json)


JsonOutput = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout (as the global --json).")]


def options_of(ctx: typer.Context, *, json: bool = False) -> Options:
    """The global options; a command's own --json (`distillery list --json`) counts as the global one."""
    found = ctx.find_object(Options)
    assert found is not None, "the callback sets the options"
    return replace(found, json=True) if json else found
