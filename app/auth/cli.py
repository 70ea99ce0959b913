"""`distillery keys …` and `distillery tenants …`: what an operator runs against the database directly.

There is no HTTP endpoint for keys: whoever can reach the database (the compose `api` container, a shell on
the host) administers them; a key never administers keys.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.auth import service
from app.auth.limits import TenantLimits
from app.errors import AppError
from app.settings import Settings, get_settings

_LIMIT_OPTIONS = {
    "max_concurrent_jobs": "jobs queued or running at once",
    "max_storage_bytes": "bytes of uploaded files in all",
    "max_upload_bytes": "bytes of one upload",
    "job_time_budget_seconds": "wall-clock seconds one job may train",
}


def add_commands(commands: Any) -> None:
    """Register `keys` and `tenants` on the `distillery` parser's subcommands."""
    keys = commands.add_parser("keys", help="Create, list and revoke API keys.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="Create a key for a tenant (created if new); shown once.")
    create.add_argument("--tenant", required=True, help="The tenant's name: a-z, 0-9, '_' and '-'.")
    create.add_argument("--json", action="store_true", help='Print {"key", "prefix", "tenant"}.')
    listing = key_commands.add_parser("list", help="List keys (prefixes only; keys are not stored).")
    listing.add_argument("--tenant", help="Only this tenant's keys.")
    listing.add_argument("--json", action="store_true")
    revoke = key_commands.add_parser("revoke", help="Revoke the key with this prefix (e.g. dk_live_ab12cd34).")
    revoke.add_argument("prefix")

    tenants = commands.add_parser("tenants", help="List tenants and their limits, or override a tenant's limits.")
    tenant_commands = tenants.add_subparsers(dest="tenants_command", required=True)
    tenant_list = tenant_commands.add_parser("list", help="Tenants and the limits they run under.")
    tenant_list.add_argument("--json", action="store_true")
    limits = tenant_commands.add_parser(
        "set", help="Override some of a tenant's limits ('default' puts one back to its DISTILLERY_ setting)."
    )
    limits.add_argument("tenant")
    for name, description in _LIMIT_OPTIONS.items():
        limits.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="N|default", help=description)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    command: Callable[[Session, argparse.Namespace, Settings], None]
    if args.command == "keys":
        command = {"create": _create, "list": _list_keys, "revoke": _revoke}[args.keys_command]
    else:
        command = {"list": _list_tenants, "set": _set_limits}[args.tenants_command]
    try:
        with _session(settings) as session:
            command(session, args, settings)
    except AppError as exc:
        print(f"error: {exc.message}")
        return 2
    return 0


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    from app.db import engine_for, make_sessionmaker

    if settings.database_url.startswith("sqlite"):
        from app.migrate import upgrade_to_head

        upgrade_to_head(settings.database_url)  # as the app does on start in the embedded mode
    engine = engine_for(settings)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()


def _create(session: Session, args: argparse.Namespace, settings: Settings) -> None:
    created = service.create_key(session, tenant=args.tenant)
    if args.json:
        print(json.dumps({"key": created.key, "prefix": created.prefix, "tenant": created.tenant}))
        return
    print(created.key)
    print(f"# tenant {created.tenant}, prefix {created.prefix}: this is the only time the key is shown.")
    if not settings.auth_required:
        print("# note: auth is off for this configuration (DISTILLERY_AUTH), so the API does not ask for keys.")


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _list_keys(session: Session, args: argparse.Namespace, settings: Settings) -> None:
    rows = [
        {
            "prefix": key.prefix,
            "tenant": key.tenant_id,
            "created_at": _when(key.created_at),
            "last_used_at": _when(key.last_used_at),
            "revoked_at": _when(key.revoked_at),
        }
        for key in service.list_keys(session, tenant=args.tenant)
    ]
    if args.json:
        print(json.dumps(rows))
        return
    _table(rows, ("prefix", "tenant", "created_at", "last_used_at", "revoked_at"))


def _revoke(session: Session, args: argparse.Namespace, settings: Settings) -> None:
    key = service.revoke_key(session, prefix=args.prefix)
    print(f"revoked {key.prefix} (tenant {key.tenant_id}) at {_when(key.revoked_at)}")


def _list_tenants(session: Session, args: argparse.Namespace, settings: Settings) -> None:
    rows = []
    for tenant in service.list_tenants(session):
        limits = TenantLimits.of(tenant, settings)
        rows.append({"tenant": tenant.id, **{name: getattr(limits, name) for name in _LIMIT_OPTIONS}})
    if args.json:
        print(json.dumps(rows))
        return
    _table(rows, ("tenant", *_LIMIT_OPTIONS))


def _set_limits(session: Session, args: argparse.Namespace, settings: Settings) -> None:
    values: dict[str, int | None] = {}
    for name in _LIMIT_OPTIONS:
        text = getattr(args, name)
        if text is None:
            continue
        if text == "default":
            values[name] = None
            continue
        try:
            values[name] = int(text)
        except ValueError:
            raise AppError(f"--{name.replace('_', '-')} takes a whole number or 'default', got {text!r}") from None
    tenant = service.set_limits(session, tenant=args.tenant, values=values)
    limits = TenantLimits.of(tenant, settings)
    print(json.dumps({"tenant": tenant.id, **{name: getattr(limits, name) for name in _LIMIT_OPTIONS}}))


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    cells = [[str(row[c]) if row[c] is not None else "-" for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
