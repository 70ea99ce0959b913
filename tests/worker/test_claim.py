"""Claiming a job: one conditional UPDATE with a lease, on Postgres (production) and SQLite (embedded)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.models import utcnow
from tests.worker.conftest import add_job, events_of, fake_spec, get_job
from worker import repository as repo

LEASE = 60.0


@pytest.fixture(params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    return request.getfixturevalue("sessions" if request.param == "postgres" else "sqlite_sessions")


def claim(db: sessionmaker[Session], job_id: str, worker: str, *, now: Any = None, max_attempts: int = 3) -> Any:
    with db() as session:
        return repo.claim_job(
            session,
            job_id=job_id,
            worker_id=worker,
            now=now or utcnow(),
            lease_seconds=LEASE,
            max_attempts=max_attempts,
        )


def test_a_queued_job_is_claimed_once(db: sessionmaker[Session]) -> None:
    job_id = add_job(db, fake_spec("succeed"))
    before = utcnow()
    first = claim(db, job_id, "w1")
    assert first is not None and first.attempt == 1 and first.worker_id == "w1"
    assert first.spec["metadata"] == {"fake": "succeed"}
    row = get_job(db, job_id)
    assert (row.status, row.attempt, row.worker_id) == ("running", 1, "w1")
    assert row.started_at is not None and row.started_at >= before
    assert row.lease_expires_at > before + timedelta(seconds=LEASE - 5)
    # A duplicate (or re-delivered) message while the lease lives: a no-op, the owner is unchanged.
    assert claim(db, job_id, "w2") is None
    assert get_job(db, job_id).worker_id == "w1"


def test_an_expired_lease_is_taken_over_with_the_next_attempt(db: sessionmaker[Session]) -> None:
    job_id = add_job(db, fake_spec("succeed"))
    first = claim(db, job_id, "w1")
    started_at = get_job(db, job_id).started_at
    later = utcnow() + timedelta(seconds=LEASE + 1)
    second = claim(db, job_id, "w2", now=later)
    assert second is not None and second.attempt == 2 and second.worker_id == "w2"
    row = get_job(db, job_id)
    assert (row.status, row.worker_id, row.attempt) == ("running", "w2", 2)
    assert row.started_at == started_at  # the first start is kept
    # The old owner is fenced off: its writes match no row.
    with db() as session:
        result = repo.sync_running_job(session, first, now=later, progress={"fraction": 0.5})
    assert not result.owned
    assert get_job(db, job_id).progress != {"fraction": 0.5}


def test_a_cancelling_job_taken_over_stays_cancelling(db: sessionmaker[Session]) -> None:
    job_id = add_job(db, fake_spec("succeed"))
    claim(db, job_id, "w1")
    with db.begin() as session:
        from app.models import Job

        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.cancel_requested = "cancelling", True
    taken = claim(db, job_id, "w2", now=utcnow() + timedelta(seconds=LEASE + 1))
    assert taken is not None and taken.cancel_requested
    assert get_job(db, job_id).status == "cancelling"


def test_no_attempts_left_fails_the_job(db: sessionmaker[Session]) -> None:
    job_id = add_job(db, fake_spec("succeed"))
    now = utcnow()
    for attempt in range(1, 3):
        claimed = claim(db, job_id, f"w{attempt}", now=now, max_attempts=2)
        assert claimed is not None and claimed.attempt == attempt
        now += timedelta(seconds=LEASE + 1)  # that worker died
    assert claim(db, job_id, "w3", now=now, max_attempts=2) is None
    with db() as session:
        assert repo.fail_if_exhausted(session, job_id=job_id, now=now, max_attempts=2)
    row = get_job(db, job_id)
    assert row.status == "failed" and row.error["code"] == "too_many_attempts"
    assert row.lease_expires_at is None and row.finished_at is not None
    assert [e.type for e in events_of(db, job_id)] == ["failed"]
    # A live lease is never "exhausted": only claimable jobs are failed.
    other = add_job(db, fake_spec("succeed"))
    claim(db, other, "w1", max_attempts=1)
    with db() as session:
        assert not repo.fail_if_exhausted(session, job_id=other, now=utcnow(), max_attempts=1)


def test_a_cancelling_job_out_of_attempts_is_cancelled_not_failed(db: sessionmaker[Session]) -> None:
    job_id = add_job(db, fake_spec("succeed"))
    claim(db, job_id, "w1", max_attempts=1)
    with db.begin() as session:
        from app.models import Job

        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.cancel_requested = "cancelling", True
    later = utcnow() + timedelta(seconds=LEASE + 1)
    with db() as session:
        assert repo.fail_if_exhausted(session, job_id=job_id, now=later, max_attempts=1)
    row = get_job(db, job_id)
    assert (row.status, row.error) == ("cancelled", None)


def test_finished_jobs_are_never_claimed(db: sessionmaker[Session]) -> None:
    job_id = add_job(db, fake_spec("succeed"), status="succeeded")
    assert claim(db, job_id, "w1", now=utcnow() + timedelta(days=1)) is None
    assert get_job(db, job_id).attempt == 0


def test_concurrent_claims_have_one_winner(sessions: sessionmaker[Session]) -> None:
    job_id = add_job(sessions, fake_spec("succeed"))
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def contender(i: int) -> None:
        barrier.wait()
        results.append(claim(sessions, job_id, f"w{i}"))

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert get_job(sessions, job_id).worker_id == winners[0].worker_id
