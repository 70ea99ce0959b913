"""Make sure every accepted job has a message in the broker: the safety net behind "a 201 is never lost".

Each round (every `reconcile_interval_seconds`, on a daemon thread that every worker starts when it is
ready, and once right away):
- queued jobs never dispatched (the broker was down at submission; a job given back at shutdown or after
  its training child died) are sent again;
- queued jobs whose message was sent longer than `redispatch_seconds` ago are looked for in the broker
  (worker/broker_queue.py): those still waiting there, behind a long job, are left alone and looked for
  again one interval later; the others (lost with a broker that restarted empty) are sent again. A broker
  that cannot be asked (the embedded one) gets them all sent again, as duplicates if need be;
- running jobs whose lease expired (their worker died) are sent again: another worker claims them with
  attempt + 1 and resumes from the checkpoint; those with no attempts left are failed instead.
Several workers may reconcile at once: `mark_dispatched` is a conditional UPDATE, so one of them sends.
Duplicates are harmless anyway, since the claim turns an extra message into a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from celery import Celery

from app.db import SessionFactory, get_sessionmaker
from app.models import utcnow
from worker import repository as repo
from worker.broker_queue import RedisQueue
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# A job younger than this with dispatched_at NULL is left to the API, which sends right after its commit.
FRESH_SECONDS = 5.0
BATCH = 100


class Sender(Protocol):
    def __call__(self, job_id: str) -> None: ...


class Queue(Protocol):
    """Which of these jobs have their message in the broker (worker/broker_queue.py)."""

    def __call__(self, job_ids: Collection[str]) -> set[str]: ...


@dataclass
class Round:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # out of attempts
    errors: list[str] = field(default_factory=list)  # could not send (broker down): retried next round
    waiting: list[str] = field(default_factory=list)  # their message is still in the broker: not sent


def reconcile_once(
    *, settings: WorkerSettings, sessions: SessionFactory, send: Sender, queue: Queue | None = None
) -> Round:
    """One round. `queue`: where to look for the messages of queued jobs sent long ago (None: send them)."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.redispatch_seconds)
    fresh_after = now - timedelta(seconds=FRESH_SECONDS)
    window = repo.DispatchWindow(now, stale_before, fresh_after, settings.max_attempts)
    result = Round()
    with sessions() as session:
        for job_id in repo.exhausted_jobs(session, now=now, max_attempts=settings.max_attempts, limit=BATCH):
            if repo.fail_if_exhausted(session, job_id=job_id, now=now, max_attempts=settings.max_attempts):
                result.failed.append(job_id)
        due = repo.jobs_needing_dispatch(session, window, limit=BATCH)
        result.waiting = sorted(_still_waiting(queue, [job.id for job in due if job.waiting]))
        if result.waiting:
            repo.mark_waiting(session, job_ids=result.waiting, now=now)
        for job_id in [job.id for job in due if job.id not in result.waiting]:
            if not repo.mark_dispatched(session, window, job_id=job_id):
                continue  # another reconciler (or the API) got there first
            try:
                send(job_id)
            except Exception as exc:
                log.warning("reconciler: could not send job %s (will retry): %s", job_id, exc)
                repo.clear_dispatched(session, job_id=job_id, dispatched_at=now)
                result.errors.append(job_id)
                break  # the broker is down: no point trying the rest now
            result.sent.append(job_id)
    if result.sent or result.failed:
        log.info("reconciler: re-sent %s, failed (no attempts left) %s", result.sent, result.failed)
    return result


def _still_waiting(queue: Queue | None, job_ids: list[str]) -> set[str]:
    """Those of `job_ids` whose message is in the broker; none when it cannot be asked (they are re-sent)."""
    if queue is None or not job_ids:
        return set()
    try:
        return queue(job_ids)
    except Exception as exc:  # the broker is down: the sends will tell, and be retried next round
        log.warning("reconciler: could not look for messages in the broker: %s", exc)
        return set()


class Reconciler(threading.Thread):
    """The periodic loop; `stop()` ends it (the thread is a daemon, so a worker exit never waits on it)."""

    def __init__(
        self, *, settings: WorkerSettings, sessions: SessionFactory, send: Sender, queue: Queue | None = None
    ) -> None:
        super().__init__(name="distillery-reconciler", daemon=True)
        self.settings = settings
        self.sessions = sessions
        self.send = send
        self.queue = queue
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                reconcile_once(settings=self.settings, sessions=self.sessions, send=self.send, queue=self.queue)
            except Exception:
                log.exception("reconciler round failed (will retry)")
            self._stopped.wait(self.settings.reconcile_interval_seconds)

    def stop(self) -> None:
        self._stopped.set()


_started: Reconciler | None = None


def start_reconciler_thread(celery_app: Celery, settings: WorkerSettings, *, task_name: str) -> Reconciler:
    """Start the process's reconciler once (called from the worker_ready signal)."""
    global _started
    if _started is None or not _started.is_alive():

        def send(job_id: str) -> None:
            celery_app.send_task(
                task_name,
                args=[job_id],
                queue=settings.train_queue,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
            )

        queue = None
        if settings.broker_url.startswith(("redis://", "rediss://")):
            queue = RedisQueue(
                settings.broker_url, queue=settings.train_queue, task=task_name, timeout=settings.broker_timeout_seconds
            )
        _started = Reconciler(settings=settings, sessions=get_sessionmaker(), send=send, queue=queue)
        _started.start()
    return _started
