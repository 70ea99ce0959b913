"""All SQL on `files`. Every query is scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.models import File


def get(session: Session, *, tenant: str, file_id: str) -> File | None:
    return session.scalars(select(File).where(File.tenant_id == tenant, File.id == file_id)).one_or_none()


def lock_for_delete(session: Session, *, tenant: str, file_id: str) -> File | None:
    """The file, locked FOR UPDATE until the transaction ends: a job submission naming it (which locks it
    FOR SHARE, see lock_many) either committed before, or waits and then finds it gone."""
    query = select(File).where(File.tenant_id == tenant, File.id == file_id).with_for_update()
    return session.scalars(query).one_or_none()


def lock_many(session: Session, *, tenant: str, file_ids: set[str]) -> set[str]:
    """Lock the files FOR SHARE until the transaction ends (a job naming them is being written); the ids
    that still exist. SQLite ignores the lock: its writers are serialised anyway."""
    if not file_ids:
        return set()
    query = select(File.id).where(File.tenant_id == tenant, File.id.in_(file_ids)).with_for_update(read=True)
    return set(session.scalars(query).all())


class FileFacts(NamedTuple):
    """What a submission reads of a file it names: a Core row, no ORM object (the ORM load was a tenth of a
    submission's CPU, docs/BENCHMARKS.md, bursts)."""

    id: str
    purpose: str
    sha256: str
    format: str
    meta: dict[str, Any]
    storage_path: str


_FACTS = select(*(File.__table__.c[name] for name in FileFacts._fields)).where(
    File.tenant_id == bindparam("tenant"), File.id.in_(bindparam("ids", expanding=True))
)
_FACTS_FOR_SHARE = _FACTS.with_for_update(read=True)


def facts_of(session: Session, *, tenant: str, file_ids: set[str], lock: bool = False) -> dict[str, FileFacts]:
    """id -> facts of those of `file_ids` that exist; `lock`: FOR SHARE, as lock_many."""
    if not file_ids:
        return {}
    rows = session.connection().execute(_FACTS_FOR_SHARE if lock else _FACTS, {"tenant": tenant, "ids": list(file_ids)})
    return {row.id: FileFacts(*row) for row in rows}


def list_page(
    session: Session, *, tenant: str, limit: int, after: str | None, purpose: str | None = None
) -> Sequence[File]:
    """Newest first; `limit + 1` rows so the caller can tell whether there is more."""
    query = select(File).where(File.tenant_id == tenant)
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    if after is not None:
        query = query.where(File.id < after)
    return session.scalars(query.order_by(File.id.desc()).limit(limit + 1)).all()


def add(session: Session, file: File) -> File:
    session.add(file)
    session.flush()
    return file


def delete(session: Session, file: File) -> None:
    session.delete(file)
    session.flush()


def total_bytes(session: Session, *, tenant: str) -> int:
    """What the tenant's files take (its storage quota counts this)."""
    return int(session.scalar(select(func.coalesce(func.sum(File.bytes), 0)).where(File.tenant_id == tenant)) or 0)
