"""Run the Alembic migrations from code: `distillery migrate`, the embedded mode's startup, and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

# migrations/ and alembic.ini live at the repository root, next to app/ (an editable install or a checkout).
ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str | None = None, *, connection: Connection | None = None) -> Config:
    """An Alembic Config for this project; without a URL, migrations/env.py falls back to Settings."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["configure_logger"] = False
    if database_url is not None:
        # ConfigParser interpolation treats % specially (e.g. url-encoded passwords).
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(database_url: str | None = None, *, connection: Connection | None = None) -> None:
    """`alembic upgrade head` against `database_url` (or an open connection); a no-op when already there."""
    if database_url is not None and database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url, connection=connection), "head")


def downgrade_to_base(database_url: str | None = None, *, connection: Connection | None = None) -> None:
    command.downgrade(alembic_config(database_url, connection=connection), "base")
