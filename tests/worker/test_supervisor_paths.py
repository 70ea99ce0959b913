"""How the supervisor ends a run, for the endings a real run cannot produce on demand (tests/worker/
fake_engine.py speaks the engine's contract in milliseconds): success, a user error, a crash, a lease lost
mid-run, a worker shutdown, a child that ignores SIGTERM, a resumed attempt."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Artifact, Job, JobMetric, utcnow
from tests.worker.conftest import FAKE_ENGINE, add_job, events_of, fake_spec, get_job
from worker import supervisor
from worker.runner import run_job


def run(sessions: sessionmaker[Session], settings: Any, job_id: str, worker_id: str = "w1") -> str:
    return run_job(job_id, settings=settings, sessions=sessions, worker_id=worker_id, engine_command=FAKE_ENGINE)


def test_success_records_metrics_progress_events_and_artifacts(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str
) -> None:
    job_id = add_job(sessions, fake_spec("succeed", dummy_teacher))
    assert run(sessions, settings, job_id) == "succeeded"
    job = get_job(sessions, job_id)
    assert job.status == "succeeded" and job.error is None and job.finished_at is not None
    assert job.lease_expires_at is None
    assert job.progress["fraction"] == 1.0 and job.progress["epoch"] == 3
    assert job.metrics["train/loss"] == 1 / 3 and job.metrics["student/top1"] == 0.8
    with sessions() as session:
        series = session.execute(select(JobMetric.step, JobMetric.value).where(JobMetric.name == "train/loss")).all()
        artifact = session.execute(select(Artifact).where(Artifact.job_id == job_id)).scalar_one()
    assert sorted(series) == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert (artifact.name, artifact.bytes, artifact.format) == ("student.safetensors", 7, "safetensors")
    assert artifact.storage_path == f"jobs/{job_id}/student.safetensors"
    assert settings.artifact_path(artifact.storage_path).read_bytes() == b"weights"
    types = [e.type for e in events_of(sessions, job_id)]
    # One progress event per epoch, not one per step; the stray print became a log event.
    assert types == ["started", "message", "log", "progress", "progress", "progress", "succeeded"]
    # The engine was given the job file, the job folder and the device, and no --resume on attempt 1.
    argv = events_of(sessions, job_id)[1].message
    assert f"--out {settings.artifact_dir.resolve()}/jobs/{job_id} --device cpu" in argv
    assert "--resume" not in argv


def test_a_user_error_fails_the_job_with_its_code(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str
) -> None:
    job_id = add_job(sessions, fake_spec("user_error", dummy_teacher))
    assert run(sessions, settings, job_id) == "failed"
    job = get_job(sessions, job_id)
    assert job.error == {
        "code": "shape_mismatch",
        "message": "the teacher outputs 3 classes, the data has 10",
        "param": "teacher",
    }


def test_a_crash_is_internal_error_with_the_traceback_in_the_events(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str
) -> None:
    job_id = add_job(sessions, fake_spec("crash", dummy_teacher))
    assert run(sessions, settings, job_id) == "failed"
    job = get_job(sessions, job_id)
    assert job.error == {"code": "internal_error", "message": supervisor.CRASH_MESSAGE, "param": None}
    crash = next(e for e in events_of(sessions, job_id) if e.type == "crash")
    assert crash.level == "error" and crash.data["exit_code"] == 1
    assert "RuntimeError: boom: a bug in the engine" in crash.data["stderr_tail"]
    assert "Traceback" in (settings.artifact_dir / "jobs" / job_id / "stderr.log").read_text()


def test_an_unknown_file_id_fails_before_starting(sessions: sessionmaker[Session], settings: Any) -> None:
    spec = fake_spec("succeed", "file_0000000000000000000000000")
    job_id = add_job(sessions, spec)
    assert run(sessions, settings, job_id) == "failed"
    job = get_job(sessions, job_id)
    assert job.error["code"] == "file_not_found" and job.error["param"] == "teacher.file_id"
    assert "started" not in [e.type for e in events_of(sessions, job_id)]


def _in_background(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _has_progress(sessions: sessionmaker[Session], job_id: str) -> bool:
    return bool(get_job(sessions, job_id).progress)


def test_cancel_flag_stops_the_run(sessions: sessionmaker[Session], settings: Any, dummy_teacher: str) -> None:
    job_id = add_job(sessions, fake_spec("forever", dummy_teacher))
    thread, out = _in_background(lambda: run(sessions, settings, job_id))
    _wait_for(lambda: _has_progress(sessions, job_id))
    asked = time.monotonic()
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, status="cancelling"))
    thread.join(timeout=15)
    assert out == ["cancelled"] and time.monotonic() - asked < 5
    job = get_job(sessions, job_id)
    assert job.status == "cancelled" and job.finished_at is not None and job.error is None
    types = [e.type for e in events_of(sessions, job_id)]
    assert types[-3:] == ["checkpoint", "message", "cancelled"] and "stopping" in types
    assert (settings.artifact_dir / "jobs" / job_id / "checkpoint.pt").exists()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str
) -> None:
    settings.cancel_grace_seconds = 1.0
    job_id = add_job(sessions, fake_spec("ignore_sigterm", dummy_teacher), cancel_requested=True, status="cancelling")
    # A cancelling job is claimable only once its lease expired: give it one that has.
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
    thread, out = _in_background(lambda: run(sessions, settings, job_id))
    thread.join(timeout=15)
    # Cancelled before it started: the child is never spawned.
    assert out == ["cancelled"]
    assert "started" not in [e.type for e in events_of(sessions, job_id)]

    other = add_job(sessions, fake_spec("ignore_sigterm", dummy_teacher))
    thread, out = _in_background(lambda: run(sessions, settings, other))
    _wait_for(lambda: _has_progress(sessions, other))
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == other).values(cancel_requested=True))
    thread.join(timeout=15)
    assert out == ["cancelled"]
    assert next(e for e in events_of(sessions, other) if e.type == "cancelled").data["exit_code"] == -9


def test_a_lost_lease_stops_the_run_and_writes_nothing(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str
) -> None:
    job_id = add_job(sessions, fake_spec("forever", dummy_teacher))
    thread, out = _in_background(lambda: run(sessions, settings, job_id))
    _wait_for(lambda: _has_progress(sessions, job_id))
    # Another worker took the job over (as if this one had stalled past its lease).
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(worker_id="w2", attempt=Job.attempt + 1))
    thread.join(timeout=15)
    assert out == ["lost"]
    job = get_job(sessions, job_id)
    assert (job.status, job.worker_id, job.finished_at) == ("running", "w2", None)


def test_worker_shutdown_gives_the_job_back_and_the_next_attempt_resumes(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str
) -> None:
    job_id = add_job(sessions, fake_spec("forever", dummy_teacher))
    supervisor.reset_shutdown()
    thread, out = _in_background(lambda: run(sessions, settings, job_id))
    _wait_for(lambda: bool(get_job(sessions, job_id).metrics))
    try:
        supervisor.request_shutdown()
        thread.join(timeout=15)
    finally:
        supervisor.reset_shutdown()
    assert out == ["queued"]
    job = get_job(sessions, job_id)
    assert (job.status, job.attempt, job.worker_id, job.dispatched_at) == ("queued", 0, None, None)
    assert job.metrics.get("train/loss") is not None  # what it logged before stopping is kept
    assert [e.type for e in events_of(sessions, job_id)][-1] == "requeued"

    # The next attempt finds the checkpoint and resumes (the fake engine echoes its argv).
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(spec=fake_spec("succeed", dummy_teacher)))
    assert run(sessions, settings, job_id, worker_id="w2") == "succeeded"
    started = [e for e in events_of(sessions, job_id) if e.type == "started"]
    assert [e.data["resumed"] for e in started] == [False, True]
    assert get_job(sessions, job_id).attempt == 1
    assert any(e.message.endswith("--resume") for e in events_of(sessions, job_id) if e.type == "message")


def test_the_lease_is_renewed_while_running(sessions: sessionmaker[Session], settings: Any, dummy_teacher: str) -> None:
    job_id = add_job(sessions, fake_spec("forever", dummy_teacher))
    thread, _ = _in_background(lambda: run(sessions, settings, job_id))
    _wait_for(lambda: _has_progress(sessions, job_id))
    first = get_job(sessions, job_id).lease_expires_at
    _wait_for(lambda: get_job(sessions, job_id).lease_expires_at > first + timedelta(seconds=0.5), timeout=5)
    assert get_job(sessions, job_id).lease_expires_at > utcnow() + timedelta(seconds=settings.lease_seconds - 2)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    thread.join(timeout=15)
