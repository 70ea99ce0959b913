"""The Celery client side of the job queue: the app sends `distillery.run_job(job_id)`, the worker runs it.

The app never imports worker/: it sends the task by name. The message is sent only after the job row is
committed (see app.db.after_commit); if the broker is down the send is logged and `dispatched_at` stays
NULL, and the worker's reconciler sends it later, so an accepted job is never lost.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property, lru_cache
from typing import Protocol

from celery import Celery
from kombu import Connection
from sqlalchemy import String, Update, any_, bindparam, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from app.db import SessionFactory, get_sessionmaker
from app.models import Job, utcnow
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


class DispatchRecorder:
    """Writes `dispatched_at` for many sends in one UPDATE (a group commit): while one thread writes, the
    ids of the sends that finish meanwhile wait, and go in the next write together. Each `record` still
    returns only once its row is written (or the write failed, which is logged: the reconciler then sends
    the job once more). In a burst of submissions this is one transaction per batch, not per job."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory
        self._changed = threading.Condition()
        self._pending: list[str] = []
        self._batch = 0  # the batch the next id goes in
        self._written = -1  # the last batch written (or given up on)
        self._writing = False

    def record(self, job_id: str) -> None:
        with self._changed:
            self._pending.append(job_id)
            mine = self._batch
            while self._writing and self._written < mine:
                self._changed.wait()
            if self._written >= mine:
                return  # another thread wrote it
            self._writing = True
            ids, self._pending = self._pending, []
            self._batch += 1
        try:
            with self.session_factory.begin() as session:
                session.execute(_dispatched(session, ids))
        except Exception:
            log.exception("could not record dispatched_at of %d job(s) (the reconciler will send them again)", len(ids))
        finally:
            with self._changed:
                self._writing = False
                self._written = mine
                self._changed.notify_all()


def _dispatched(session: Session, job_ids: list[str]) -> Update:
    """`UPDATE jobs SET dispatched_at = now WHERE id = ANY(:ids)` on Postgres: one statement text for any
    number of ids, which psycopg prepares once (an IN list is a new text, parsed anew, per batch size)."""
    if session.get_bind().dialect.name == "postgresql":
        matches = Job.id == any_(bindparam("ids", job_ids, type_=postgresql.ARRAY(String)))
    else:
        matches = Job.id.in_(job_ids)
    return update(Job).where(matches).values(dispatched_at=utcnow()).execution_options(synchronize_session=False)


class CeleryJobQueue:
    def __init__(self, settings: Settings, session_factory: SessionFactory) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.recorder = DispatchRecorder(session_factory)

    @cached_property
    def celery(self) -> Celery:
        return make_celery_client(self.settings)

    def send_run_job(self, job_id: str) -> None:
        """Send the message, then record `dispatched_at`; on a broker failure log and leave it NULL."""
        try:
            self.celery.send_task(
                RUN_JOB_TASK,
                args=[job_id],
                queue=self.settings.train_queue,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
            )
        except Exception as exc:
            log.warning("could not send %s for %s (the reconciler will retry): %s", RUN_JOB_TASK, job_id, exc)
            return
        self.recorder.record(job_id)


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
