"""The webhook dispatcher: sends the deliveries that job status changes queued (app.webhooks.outbox).

It runs on a daemon thread of every worker process, started when the worker is ready, like the reconciler:
the worker's main thread supervises training, which this thread never waits on, and a receiver that is
slow or down never holds up a job (the job's transaction wrote the outbox row and is long committed).

Each round (every `webhook_poll_seconds`, or at once after a full batch):
1. claim up to `webhook_concurrency` due deliveries in one short transaction (FOR UPDATE SKIP LOCKED on
   Postgres, so several workers share the work without sending anything twice), counting the attempt and
   leasing the rows until the attempt is surely over;
2. send them, each on a thread of its own, outside any transaction (signed with the endpoint's secrets,
   through the address guard);
3. record each outcome: delivered; or failed and retried after an exponentially growing delay; or, past
   the retry cutoff, failed for good with the endpoint marked `failing`.
A dispatcher that dies between 1 and 3 leaves its deliveries to be sent again when the lease runs out:
delivery is at least once, and receivers de-duplicate by `webhook-id`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.orm import Session

from app.db import SessionFactory, get_sessionmaker
from app.models import utcnow
from app.webhooks import repository as repo
from app.webhooks import service
from app.webhooks.repository import ClaimedDelivery
from app.webhooks.sender import Attempt, make_client, post
from app.webhooks.signing import body_of, signed_headers, signing_secrets
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# Added to the longest an attempt can take before a claimed delivery is considered abandoned.
LEASE_MARGIN_SECONDS = 30.0
# The longest pause between rounds while they keep failing (the database is unreachable).
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    status: str  # succeeded | pending (a retry is scheduled) | failed (out of retries)
    attempt: Attempt


def send_one(claim: ClaimedDelivery, *, settings: WorkerSettings, client: httpx.Client) -> Attempt:
    """One attempt, signed at the time it is made. Never raises: a bug here must not stop the dispatcher."""
    try:
        now = utcnow()
        secrets = signing_secrets(claim.secret, claim.previous_secret, claim.previous_secret_expires_at, now=now)
        body = body_of(claim.payload)
        headers = signed_headers(secrets=secrets, message_id=claim.message_id, body=body, now=now)
        return post(
            client,
            claim.url,
            body=body,
            headers=headers,
            allowed=settings.webhook_allowed_networks,
            max_redirects=settings.webhook_max_redirects,
        )
    except Exception:
        log.exception("webhook delivery %s: could not be sent", claim.id)
        return Attempt(None, "internal error while sending; it has been logged")


def deliver_due(*, settings: WorkerSettings, sessions: SessionFactory, client: httpx.Client) -> list[Outcome]:
    """One round: claim, send, record. Returns what happened to each delivery it claimed."""
    now = utcnow()
    # httpx's timeout bounds each phase (connect, write, read) of each hop: this covers them all.
    longest = 3 * settings.webhook_timeout_seconds * (settings.webhook_max_redirects + 1)
    lease_until = now + timedelta(seconds=longest + LEASE_MARGIN_SECONDS)
    with sessions.begin() as session:
        claimed = repo.claim_due(session, now=now, lease_until=lease_until, limit=settings.webhook_concurrency)
    if not claimed:
        return []
    if len(claimed) == 1:
        attempts = [send_one(claimed[0], settings=settings, client=client)]
    else:
        with ThreadPoolExecutor(max_workers=len(claimed), thread_name_prefix="distillery-webhook-send") as pool:
            attempts = list(pool.map(lambda claim: send_one(claim, settings=settings, client=client), claimed))
    done = utcnow()
    outcomes = []
    with sessions.begin() as session:
        for claim, attempt in zip(claimed, attempts, strict=True):
            outcome = _record(session, claim, attempt, settings=settings, now=done)
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


def _record(
    session: Session, claim: ClaimedDelivery, attempt: Attempt, *, settings: WorkerSettings, now: datetime
) -> Outcome | None:
    """Write one attempt's outcome and, when it decides the endpoint's health, the endpoint's status."""
    if attempt.delivered:
        status, retry_at = "succeeded", None
    else:
        retry_at = service.next_attempt_at(
            settings, attempts=claim.attempt, now=now, created_at=claim.created_at, retry_until=claim.retry_until
        )
        status = "pending" if retry_at is not None else "failed"
    written = repo.record_attempt(
        session,
        claim,
        now=now,
        status=status,
        status_code=attempt.status_code,
        error=attempt.error,
        next_attempt_at=retry_at,
    )
    if not written:
        return None  # the endpoint was deleted, or a newer attempt owns the delivery
    if status != "pending":
        repo.set_status(session, webhook_id=claim.webhook_id, failing=status == "failed", now=now)
    if status == "failed":
        log.warning("webhook delivery %s to %s failed for good: %s", claim.id, claim.url, attempt.error)
    return Outcome(claim.id, status, attempt)


class WebhookDispatcher(threading.Thread):
    """The periodic loop; `stop()` ends it (a daemon thread, so a worker's exit never waits on it)."""

    def __init__(self, *, settings: WorkerSettings, sessions: SessionFactory) -> None:
        super().__init__(name="distillery-webhooks", daemon=True)
        self.settings = settings
        self.sessions = sessions
        self._stopped = threading.Event()

    def run(self) -> None:
        allowed = self.settings.webhook_allowed_networks
        poll = self.settings.webhook_poll_seconds
        failures = 0
        with make_client(allowed=allowed, timeout=self.settings.webhook_timeout_seconds) as client:
            while not self._stopped.is_set():
                try:
                    sent = len(deliver_due(settings=self.settings, sessions=self.sessions, client=client))
                    failures = 0
                except Exception as exc:
                    # The database is down, most likely: one traceback, then a line per round, less often.
                    failures += 1
                    if failures == 1:
                        log.exception("webhook round failed (will retry)")
                    else:
                        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
                        log.warning("webhook round failed again (%d in a row): %s", failures, first_line)
                    sent = 0
                if failures:
                    self._stopped.wait(min(poll * 2 ** min(failures, 16), MAX_BACKOFF_SECONDS))
                elif sent < self.settings.webhook_concurrency:  # a full batch: there may be more, go on at once
                    self._stopped.wait(poll)

    def stop(self) -> None:
        self._stopped.set()


_started: WebhookDispatcher | None = None


def start_webhook_dispatcher(settings: WorkerSettings) -> WebhookDispatcher:
    """Start the process's dispatcher once (called from the worker_ready signal)."""
    global _started
    if _started is None or not _started.is_alive():
        _started = WebhookDispatcher(settings=settings, sessions=get_sessionmaker())
        _started.start()
    return _started
