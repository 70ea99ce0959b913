"""The body of the `distillery.run_job` task, without Celery: claim the job, supervise it, never lose it.

Kept apart from worker/tasks.py so tests (and other entry points) can run a job in-process without
building the Celery app.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Sequence

from app.db import SessionFactory
from app.models import utcnow
from worker import repository as repo
from worker.repository import EventRow
from worker.settings import WorkerSettings
from worker.supervisor import CRASH_MESSAGE, ENGINE_COMMAND, supervise

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(
    job_id: str,
    *,
    settings: WorkerSettings,
    sessions: SessionFactory,
    worker_id: str | None = None,
    engine_command: Sequence[str] | None = None,
) -> str:
    """Run `job_id` if it can be claimed; returns what happened ('skipped', or the job's final status)."""
    now = utcnow()
    with sessions() as session:
        job = repo.claim_job(
            session,
            job_id=job_id,
            worker_id=worker_id or default_worker_id(),
            now=now,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
        )
    if job is None:
        with sessions() as session:
            if repo.fail_if_exhausted(session, job_id=job_id, now=now, max_attempts=settings.max_attempts):
                log.warning("job %s: no attempts left, failed as too_many_attempts", job_id)
                return "failed"
        # A duplicate or re-delivered message, a live lease held by another worker, or a finished job.
        log.info("job %s is not claimable (finished, or leased by another worker): nothing to do", job_id)
        return "skipped"
    log.info("job %s: attempt %s claimed by %s", job.id, job.attempt, job.worker_id)
    try:
        command = engine_command or settings.engine_command or ENGINE_COMMAND
        return supervise(job, settings=settings, sessions=sessions, engine_command=command)
    except Exception:
        # Our bug (in the worker itself): the user sees a generic message, the log has the traceback.
        log.exception("job %s: the worker failed while supervising it", job.id)
        event = EventRow("failed", CRASH_MESSAGE, "error", {"traceback": traceback.format_exc()[-8000:]})
        error = {"code": "internal_error", "message": CRASH_MESSAGE, "param": None}
        with sessions() as session:
            repo.finish_job(session, job, now=utcnow(), status="failed", error=error, events=[event])
        return "failed"
