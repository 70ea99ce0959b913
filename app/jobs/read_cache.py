"""The answers of `GET /v1/jobs/{id}`, kept in memory until Postgres says the job changed.

Clients poll a job far more often than it changes (a training job changes once per epoch; a queued one not
at all), and a read from Postgres cost three times what FastAPI itself costs per request
(docs/BENCHMARKS.md). So each API process keeps the body and ETag it last served per job, and a trigger
(migration 0008) sends the job's id on `CHANNEL` whenever the job or one of its artifacts changes, from
whichever process: this process's listener thread forgets the answer when the writing transaction commits.

Never stale for longer than a notification takes to arrive (well under a millisecond on one host):
- Nothing is served from memory unless the listener is connected and listening; while it reconnects,
  every GET reads Postgres, and it forgets everything when it listens again (it may have missed changes).
- A read that overlapped a notification does not store what it read: it may predate the change (the
  `generation` a read starts with must still be current when it stores).
- A change made by this process (a cancel) is forgotten as it commits, before the notification arrives,
  so a client sees its own write at once.
- While one request reads a job from the database, others that miss the same job wait for its answer
  instead of reading too (when the job changes, every poller misses at once), unless a change was heard
  after that read began: then they read anew.
- Entries are per tenant (a hit must match the request's tenant, as the SQL does), at most `max_entries`,
  the oldest dropped first.

Postgres only; SQLite (embedded mode) has no NOTIFY, and a test's rolled-back transaction never notifies:
there the cache is off and every GET reads the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
from sqlalchemy import Engine

from app.db import SessionFactory

log = logging.getLogger(__name__)

CHANNEL = "distillery_job_changed"  # migrations/versions/0008_job_change_notify.py
FORGET_ALL = "*"  # the payload a TRUNCATE sends
# How long the listener waits for a notification before it checks its connection is still alive.
IDLE_CHECK_SECONDS = 2.0
RECONNECT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Answer:
    """What GET /v1/jobs/{id} answers for one job: its JSON body and its ETag."""

    tenant: str
    etag: str
    body: bytes


class JobReadCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        # Moves on every forget and every (dis)connection of the listener: a read stores only if it has not.
        self.generation = 0
        self.listening = False
        # (job id, tenant) -> the read in flight on the event loop, and the generation it began at.
        self._reading: dict[tuple[str, str], tuple[asyncio.Future[Answer], int]] = {}

    async def read_once(self, job_id: str, tenant: str, read: Callable[[int], Awaitable[Answer]]) -> Answer:
        """`read(generation)`'s answer, shared with the requests that miss the same job meanwhile. The read
        runs as a task of its own, so a request that gives up does not take it from those still waiting."""
        key = (job_id, tenant)
        in_flight = self._reading.get(key)
        if in_flight is None or in_flight[1] != self.generation:
            generation = self.generation
            task = asyncio.ensure_future(read(generation))
            in_flight = self._reading[key] = (task, generation)

            def done(finished: asyncio.Future[Answer]) -> None:
                if self._reading.get(key, (None, 0))[0] is finished:
                    del self._reading[key]
                if not finished.cancelled():
                    finished.exception()  # retrieved, even when every request waiting for it has gone

            task.add_done_callback(done)
        return await asyncio.shield(in_flight[0])

    def get(self, job_id: str, tenant: str) -> Answer | None:
        if not self.listening:
            return None
        answer = self._answers.get(job_id)
        return answer if answer is not None and answer.tenant == tenant else None

    def store(self, job_id: str, answer: Answer, *, generation: int) -> None:
        """Keep `answer`, read by a read that began at `generation`, unless something changed since."""
        with self._lock:
            if not self.listening or generation != self.generation:
                return
            if len(self._answers) >= self.max_entries and job_id not in self._answers:
                del self._answers[next(iter(self._answers))]  # the oldest (dicts keep insertion order)
            self._answers[job_id] = answer

    def forget(self, job_id: str) -> None:
        with self._lock:
            self.generation += 1
            if job_id == FORGET_ALL:
                self._answers.clear()
            else:
                self._answers.pop(job_id, None)

    def set_listening(self, listening: bool) -> None:
        """The listener (dis)connected: either way what is kept may have missed a change, so forget it all."""
        with self._lock:
            self.generation += 1
            self.listening = listening
            self._answers.clear()  # changes may have gone unheard: start again from the database


class ChangeListener:
    """A daemon thread that LISTENs on `CHANNEL` and makes `cache` forget each job it hears of."""

    def __init__(self, cache: JobReadCache, engine: Engine) -> None:
        self.cache = cache
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-change-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; the thread ends within IDLE_CHECK_SECONDS (a daemon: it never holds up an exit)."""
        self._stopped.set()
        self.cache.set_listening(False)

    @classmethod
    def for_sessions(cls, cache: JobReadCache, factory: SessionFactory) -> ChangeListener | None:
        """A listener for the database of `factory`, or None where the cache stays off: SQLite, a test's
        factory bound to one connection in a rolled-back transaction, or a cache of no entries."""
        bind = factory.kw["bind"]
        if cache.max_entries <= 0 or not isinstance(bind, Engine) or bind.dialect.name != "postgresql":
            return None
        return cls(cache, bind)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=5, application_name="distillery-job-listener"
                ) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.cache.set_listening(True)
                    self._listen(connection)
            except psycopg.Error as exc:
                if self.cache.listening:
                    log.warning("job change listener lost its connection (%s); reading every job", exc)
            finally:
                self.cache.set_listening(False)
            self._stopped.wait(RECONNECT_SECONDS)

    def _listen(self, connection: psycopg.Connection) -> None:
        while not self._stopped.is_set():
            heard = False
            for notify in connection.notifies(timeout=IDLE_CHECK_SECONDS):
                self.cache.forget(notify.payload)
                heard = True
                if self._stopped.is_set():
                    return
            if not heard:
                connection.execute("SELECT 1")  # a dead connection raises here rather than waiting forever
