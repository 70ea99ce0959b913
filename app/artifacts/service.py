"""Rules for a job's artifacts: which exist, and where the bytes of one are. Never commits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from app.artifacts import repository
from app.errors import NotFound
from app.jobs.service import get_job
from app.models import Artifact
from app.settings import Settings

log = logging.getLogger(__name__)


def list_artifacts(session: Session, *, tenant: str, job_id: str) -> Sequence[Artifact]:
    get_job(session, tenant=tenant, job_id=job_id)  # 404 for an unknown job rather than an empty list
    return repository.list_for_job(session, tenant=tenant, job_id=job_id)


def locate_artifact(
    session: Session, *, tenant: str, settings: Settings, job_id: str, name: str
) -> tuple[Artifact, Path]:
    """The artifact row and its file on disk."""
    get_job(session, tenant=tenant, job_id=job_id)
    artifact = repository.get(session, tenant=tenant, job_id=job_id, name=name)
    if artifact is None:
        raise NotFound(f"job {job_id!r} has no artifact {name!r}")
    path = settings.artifact_path(artifact.storage_path)
    if not path.is_file():
        # The row says it exists but the store lost it: ours to investigate, the client's to hear plainly.
        log.error("artifact %s of job %s is missing from the store at %s", name, job_id, path)
        raise NotFound(f"artifact {name!r} of job {job_id!r} is no longer in the store", code="artifact_missing")
    return artifact, path
