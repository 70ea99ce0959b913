"""All SQL on `check_verdicts`: the submission checks that passed, per tenant."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import CheckVerdict


def has_passed(session: Session, *, tenant: str, key: str) -> bool:
    query = select(CheckVerdict.key).where(CheckVerdict.tenant_id == tenant, CheckVerdict.key == key)
    return session.scalar(query) is not None


def record_pass(session: Session, *, tenant: str, key: str, now: datetime) -> None:
    """Idempotent: identical submissions that were checked at the same time each record the same pass."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(CheckVerdict).values(tenant_id=tenant, key=key, created_at=now).on_conflict_do_nothing()
    session.execute(statement)
