"""The Celery client side of the job queue: the app sends `distillery.run_job(job_id)`, the worker runs it.

The app never imports worker/: it sends the task by name. The message is sent only after the job row is
committed (see app.db.after_commit), and its row says it was (`dispatched_at`, written with the row); if
the broker is down the send is logged and `dispatched_at` set back to NULL, and the worker's reconciler
sends it later, so an accepted job is never lost.
"""

from __future__ import annotations

import logging
from functools import cached_property, lru_cache
from typing import Protocol

from celery import Celery
from kombu import Connection
from sqlalchemy import update

from app.db import SessionFactory, get_sessionmaker
from app.models import Job
from app.queue_redis import RedisSender
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

RUN_JOB_TASK = "distillery.run_job"


class JobQueue(Protocol):
    def send_run_job(self, job_id: str) -> None: ...


def make_celery_client(settings: Settings) -> Celery:
    """A send-only Celery app: same broker, transport options and queue as the worker, results ignored."""
    client = Celery("distillery-api", broker=settings.broker_url, set_as_current=False)
    client.conf.update(
        broker_transport_options=settings.broker_transport_options(),
        broker_connection_timeout=settings.broker_timeout_seconds,
        broker_connection_retry_on_startup=False,
        task_ignore_result=True,
        task_default_queue=settings.train_queue,
    )
    return client


def mark_unsent(session_factory: SessionFactory, job_id: str) -> None:
    """The send of a new job failed: dispatched_at (written with the row) back to NULL, so the worker's
    reconciler sends it in its next round (a job some worker has already claimed is left alone)."""
    try:
        with session_factory.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(dispatched_at=None)
                .execution_options(synchronize_session=False)
            )
    except Exception:
        log.exception("could not clear dispatched_at of %s (the reconciler sends it once it is stale)", job_id)


class CeleryJobQueue:
    """Sends Celery's run_job message: on Redis (production) written straight to its list by app.queue_redis,
    the same message at a tenth of the CPU; on any other broker through Celery's `send_task`."""

    def __init__(self, settings: Settings, session_factory: SessionFactory) -> None:
        self.settings = settings
        self.session_factory = session_factory

    @cached_property
    def celery(self) -> Celery:
        return make_celery_client(self.settings)

    @cached_property
    def redis_sender(self) -> RedisSender | None:
        if not self.settings.broker_url.startswith("redis://"):
            return None
        return RedisSender(
            self.settings.broker_url,
            queue=self.settings.train_queue,
            task=RUN_JOB_TASK,
            timeout=self.settings.broker_timeout_seconds,
        )

    def send_run_job(self, job_id: str) -> None:
        """Send the message; on a broker failure log it and clear the job's `dispatched_at` (see mark_unsent)."""
        try:
            if self.redis_sender is not None:
                self.redis_sender.send(job_id)
            else:
                self.celery.send_task(
                    RUN_JOB_TASK,
                    args=[job_id],
                    queue=self.settings.train_queue,
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
                )
        except Exception as exc:
            log.warning("could not send %s for %s (the reconciler will retry): %s", RUN_JOB_TASK, job_id, exc)
            mark_unsent(self.session_factory, job_id)


def broker_problem(settings: Settings) -> str | None:
    """None if the broker accepts a connection within `broker_timeout_seconds`, else why not (for /readyz)."""
    connection = Connection(
        settings.broker_url,
        connect_timeout=settings.broker_timeout_seconds,
        transport_options={
            **settings.broker_transport_options(),
            "socket_connect_timeout": settings.broker_timeout_seconds,
            "socket_timeout": settings.broker_timeout_seconds,
        },
    )
    try:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=settings.broker_timeout_seconds
        )
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.release()


@lru_cache
def default_queue() -> CeleryJobQueue:
    return CeleryJobQueue(get_settings(), get_sessionmaker())


def send_run_job(job_id: str) -> None:
    """The contract's entry point: enqueue `job_id` with the process-wide settings (after commit only)."""
    default_queue().send_run_job(job_id)
