"""Celery tasks. They take ids, never objects; the job's state lives in the database (STYLE)."""

from __future__ import annotations

from app.db import get_sessionmaker
from worker import metrics, runner
from worker.celery_app import RUN_JOB_TASK, app
from worker.settings import get_worker_settings


@app.task(name=RUN_JOB_TASK, ignore_result=True, acks_late=True)
def run_job(job_id: str) -> str:
    """Claim and run one job. A duplicate message is a no-op (the claim decides), so retries are safe."""
    with metrics.busy():
        status = runner.run_job(job_id, settings=get_worker_settings(), sessions=get_sessionmaker())
    metrics.count_outcome(status)
    return status
