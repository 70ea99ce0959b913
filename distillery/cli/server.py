"""Service commands: serve, migrate, keys, tenants. They run `app.cli` (the service's own argparse command,
which `python -m app.cli` keeps running as before), so both spellings behave the same."""

from __future__ import annotations

from typing import Annotated

import typer

from distillery.cli.base import app, options_of

keys = typer.Typer(help="Create, list and revoke API keys (on this machine's database).", no_args_is_help=True)
tenants = typer.Typer(help="List tenants and their limits, or override a tenant's limits.", no_args_is_help=True)
app.add_typer(keys, name="keys")
app.add_typer(tenants, name="tenants")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _run(*argv: str) -> None:
    from app.cli import main as service_main  # the service (and its settings) only for these commands

    raise typer.Exit(service_main(list(argv)))


def _json(ctx: typer.Context, flag: bool) -> tuple[str, ...]:
    return ("--json",) if flag or options_of(ctx).json else ()


@app.command(rich_help_panel="Service")
def serve(
    host: Annotated[str | None, typer.Option(help="Default: DISTILLERY_API_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Default: DISTILLERY_API_PORT (8000).")] = None,
) -> None:
    """Run the HTTP API with uvicorn (SQLite is migrated on startup)."""
    _run("serve", *(("--host", host) if host else ()), *(("--port", str(port)) if port else ()))


@app.command(rich_help_panel="Service")
def migrate(
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", "--url", help="Default: DISTILLERY_DATABASE_URL (or the embedded SQLite file)."),
    ] = None,
) -> None:
    """Bring the database to the current schema (alembic upgrade head)."""
    _run("migrate", *(("--url", database_url) if database_url else ()))


@keys.command("create")
def create_key(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant's name: a-z, 0-9, '_' and '-' (created if new).")],
    json: JsonFlag = False,
) -> None:
    """Create a key for a tenant; it is shown once."""
    _run("keys", "create", "--tenant", tenant, *_json(ctx, json))


@keys.command("list")
def list_keys(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    json: JsonFlag = False,
) -> None:
    """List keys (prefixes only; keys are not stored)."""
    _run("keys", "list", *(("--tenant", tenant) if tenant else ()), *_json(ctx, json))


@keys.command("revoke")
def revoke_key(prefix: Annotated[str, typer.Argument(help="e.g. dk_live_ab12cd34.", show_default=False)]) -> None:
    """Revoke the key with this prefix."""
    _run("keys", "revoke", prefix)


@tenants.command("list")
def list_tenants(ctx: typer.Context, json: JsonFlag = False) -> None:
    """Tenants and the limits they run under."""
    _run("tenants", "list", *_json(ctx, json))


@tenants.command("set")
def set_limits(
    tenant: Annotated[str, typer.Argument(show_default=False)],
    max_concurrent_jobs: Annotated[str | None, typer.Option(help="Jobs queued or running at once.")] = None,
    max_storage_bytes: Annotated[str | None, typer.Option(help="Bytes of uploaded files in all.")] = None,
    max_upload_bytes: Annotated[str | None, typer.Option(help="Bytes of one upload.")] = None,
    job_time_budget_seconds: Annotated[str | None, typer.Option(help="Wall-clock seconds one job may train.")] = None,
) -> None:
    """Override some of a tenant's limits: a number, or 'default' for its DISTILLERY_ setting."""
    limits = {
        "--max-concurrent-jobs": max_concurrent_jobs,
        "--max-storage-bytes": max_storage_bytes,
        "--max-upload-bytes": max_upload_bytes,
        "--job-time-budget-seconds": job_time_budget_seconds,
    }
    _run(
        "tenants",
        "set",
        tenant,
        *(part for flag, value in limits.items() if value is not None for part in (flag, value)),
    )
