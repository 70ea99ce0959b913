"""All SQL on `artifacts`. Scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Artifact


def list_for_job(session: Session, *, tenant: str, job_id: str) -> Sequence[Artifact]:
    query = select(Artifact).where(Artifact.tenant_id == tenant, Artifact.job_id == job_id)
    return session.scalars(query.order_by(Artifact.name)).all()


def get(session: Session, *, tenant: str, job_id: str, name: str) -> Artifact | None:
    query = select(Artifact).where(Artifact.tenant_id == tenant, Artifact.job_id == job_id, Artifact.name == name)
    return session.scalars(query).one_or_none()


def add(session: Session, artifact: Artifact) -> Artifact:
    session.add(artifact)
    session.flush()
    return artifact
