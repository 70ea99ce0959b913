"""Live job events as Server-Sent Events (`GET /v1/jobs/{id}/events?stream=true`).

Many people (and dashboards) watch the same jobs. Each watcher polling the database on its own would cost
one query per watcher per tick; instead one `EventHub` per API process polls for every job watched in
that process at once — one query for the new events of all of them (each job from its own cursor: a job's
events are written by one supervisor at a time, so per job they commit in id order) and one for their
statuses — and fans the rows out to the watchers' queues. Each watcher drops what it has already sent, so
a watcher that joins late (or resumes with `Last-Event-ID`) lowers its job's cursor and gets its backlog
from the same shared query.

A stream ends after the job's final event once the job is finished (`event: end` with its status), and
sends a comment line every `keepalive_seconds` so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from app.db import SessionFactory
from app.jobs import repository
from app.jobs.schemas import EventRead
from app.models import FINISHED_STATUSES

log = logging.getLogger(__name__)

_BATCH = 1000  # rows per poll; a long backlog is read over consecutive ticks


@dataclass(eq=False)
class _Watcher:
    job_id: str
    sent: int  # the id of the last event this watcher has sent (0: none)
    queue: asyncio.Queue[tuple[list[dict[str, Any]], str | None]] = field(default_factory=asyncio.Queue)


class EventHub:
    """One per API process (app.state.event_hub). The poller runs only while somebody watches."""

    def __init__(self, sessions: SessionFactory, *, poll_seconds: float = 0.5, keepalive_seconds: float = 15.0):
        self.sessions = sessions
        self.poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds
        self._watchers: dict[str, set[_Watcher]] = {}
        self._cursors: dict[str, int] = {}  # job id -> the last event id read for it
        self._poller: asyncio.Task[None] | None = None
        self.polls = 0  # database round trips of the poller (tests check it does not grow with watchers)

    async def stream(self, job_id: str, *, after: int) -> AsyncIterator[str]:
        """The SSE text of the job's events after `after`, then `event: end` once the job has finished."""
        watcher = _Watcher(job_id=job_id, sent=after)
        self._watch(watcher)
        try:
            yield f"retry: {int(self.poll_seconds * 4000)}\n\n"
            while True:
                try:
                    events, final_status = await asyncio.wait_for(watcher.queue.get(), self.keepalive_seconds)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                for event in events:
                    if event["id"] > watcher.sent:
                        watcher.sent = event["id"]
                        yield f"id: {event['id']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
                if final_status is not None:
                    yield f"event: end\ndata: {json.dumps({'status': final_status})}\n\n"
                    return
        finally:
            self._unwatch(watcher)

    def _watch(self, watcher: _Watcher) -> None:
        self._watchers.setdefault(watcher.job_id, set()).add(watcher)
        cursor = self._cursors.get(watcher.job_id)
        self._cursors[watcher.job_id] = watcher.sent if cursor is None else min(cursor, watcher.sent)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    def _unwatch(self, watcher: _Watcher) -> None:
        watchers = self._watchers.get(watcher.job_id, set())
        watchers.discard(watcher)
        if not watchers:
            self._watchers.pop(watcher.job_id, None)
            self._cursors.pop(watcher.job_id, None)

    async def _poll_forever(self) -> None:
        while self._watchers:
            try:
                more = await self._poll_once()
            except Exception:  # the database is away: the watchers wait (keepalives go on), we retry
                log.warning("event stream: could not read job events; retrying", exc_info=True)
                more = False
            if not more:
                await asyncio.sleep(self.poll_seconds)

    async def _poll_once(self) -> bool:
        """One shared read for every watched job; True when the batch was full (read again at once)."""
        cursors = dict(self._cursors)
        if not cursors:
            return False
        rows, statuses = await anyio.to_thread.run_sync(self._read, cursors)
        self.polls += 1
        by_job: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_job.setdefault(row["job_id"], []).append(row["event"])
        full = len(rows) >= _BATCH  # more may be waiting: no job is declared over on a partial read
        for job_id in cursors:
            events = by_job.get(job_id, [])
            if events and job_id in self._cursors:
                self._cursors[job_id] = max(self._cursors[job_id], events[-1]["id"])
            # The job is over and everything it wrote has been read: its watchers get the end. (Statuses are
            # read before events, and the final event commits with the final status.)
            status = statuses.get(job_id, "deleted")
            final = status if status in {*FINISHED_STATUSES, "deleted"} and not full else None
            if events or final is not None:
                for watcher in list(self._watchers.get(job_id, ())):
                    watcher.queue.put_nowait((events, final))
        return full

    def _read(self, cursors: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        with self.sessions() as session:
            statuses = repository.statuses(session, job_ids=list(cursors))
            events = repository.events_after(session, cursors=cursors, limit=_BATCH)
            rows = [{"job_id": e.job_id, "event": EventRead.model_validate(e).model_dump(mode="json")} for e in events]
        return rows, statuses

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
