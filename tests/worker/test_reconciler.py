"""The reconciler: every accepted job ends up with a message, exactly the ones that need one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.models import utcnow
from tests.worker.conftest import add_job, fake_spec, get_job
from worker.reconciler import reconcile_once


class Outbox:
    """Records what the reconciler sends; `down` makes the send fail as a broker that is unreachable would."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def __call__(self, job_id: str) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.sent.append(job_id)


def test_which_jobs_are_sent_again(sessions: sessionmaker[Session], settings: Any) -> None:
    now = utcnow()
    old = now - timedelta(minutes=1)
    long_ago = now - timedelta(seconds=settings.redispatch_seconds + 60)
    lease_gone = now - timedelta(seconds=10)
    lease_live = now + timedelta(seconds=30)
    spec = fake_spec("succeed")
    never_sent = add_job(sessions, spec, created_at=old)
    just_created = add_job(sessions, spec, created_at=now)  # the API is about to send it
    recently = now - timedelta(seconds=settings.redispatch_seconds / 2)  # within the interval: not yet lost
    sent_recently = add_job(sessions, spec, created_at=old, dispatched_at=recently)
    sent_long_ago = add_job(sessions, spec, created_at=long_ago, dispatched_at=long_ago)
    orphaned = add_job(
        sessions, spec, status="running", attempt=1, worker_id="dead", lease_expires_at=lease_gone, dispatched_at=old
    )
    alive = add_job(sessions, spec, status="running", attempt=1, worker_id="w", lease_expires_at=lease_live)
    exhausted = add_job(
        sessions, spec, status="running", attempt=settings.max_attempts, worker_id="dead", lease_expires_at=lease_gone
    )
    finished = add_job(sessions, spec, status="succeeded", created_at=old)

    outbox = Outbox()
    result = reconcile_once(settings=settings, sessions=sessions, send=outbox)
    assert sorted(outbox.sent) == sorted([never_sent, sent_long_ago, orphaned])
    assert result.failed == [exhausted]
    assert get_job(sessions, exhausted).error["code"] == "too_many_attempts"
    assert get_job(sessions, never_sent).dispatched_at is not None
    for untouched in (just_created, sent_recently, alive, finished):
        assert untouched not in outbox.sent

    # The next round sends nothing again: each re-send is recorded in dispatched_at.
    again = Outbox()
    reconcile_once(settings=settings, sessions=sessions, send=again)
    assert again.sent == []


def test_a_failed_send_is_retried_next_round(sessions: sessionmaker[Session], settings: Any) -> None:
    job_id = add_job(sessions, fake_spec("succeed"), created_at=utcnow() - timedelta(minutes=1))
    outbox = Outbox()
    outbox.down = True
    result = reconcile_once(settings=settings, sessions=sessions, send=outbox)
    assert result.errors == [job_id] and get_job(sessions, job_id).dispatched_at is None
    outbox.down = False
    reconcile_once(settings=settings, sessions=sessions, send=outbox)
    assert outbox.sent == [job_id]
