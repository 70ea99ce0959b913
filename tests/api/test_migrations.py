"""Alembic: on an empty Postgres database, `upgrade head` builds exactly app.models, `downgrade base` removes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import downgrade_to_base, upgrade_to_head
from app.models import Base
from tests.conftest import POSTGRES_SERVER_URL, create_database, drop_database, require_service


@pytest.fixture
def empty_database() -> Iterator[str]:
    require_service("postgres")
    name = f"distillery_migration_{uuid.uuid4().hex[:10]}"
    create_database(name)
    try:
        yield f"{POSTGRES_SERVER_URL}/{name}"
    finally:
        drop_database(name)


def test_upgrade_matches_models_and_downgrade_removes_everything(empty_database: str) -> None:
    upgrade_to_head(empty_database)
    engine = create_engine(empty_database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert set(inspect(connection).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
        upgrade_to_head(empty_database)  # a second upgrade is a no-op
        downgrade_to_base(empty_database)
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_sqlite_embedded_default(tmp_path: Path) -> None:
    """The embedded mode migrates a SQLite file too (the app does it on startup)."""
    url = f"sqlite:///{tmp_path}/var/distillery.db"
    upgrade_to_head(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
