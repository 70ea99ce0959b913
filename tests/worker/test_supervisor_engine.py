"""The supervisor driving the real engine (`python -m distill run`) on the built-in digits.

Each test trains for a few seconds on CPU: a worker shutdown mid-run and the resumed attempt that finishes
the job, and a cancel.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Artifact, Job, JobMetric
from tests.worker.conftest import add_file, add_job, events_of, get_job
from worker import supervisor
from worker.outcome import sha256_of
from worker.runner import run_job

pytestmark = pytest.mark.slow


def digits_spec(teacher_id: str, *, epochs: int, batch_size: int = 64) -> dict[str, Any]:
    return {
        "teacher": {"file_id": teacher_id, "architecture": {"name": "mlp", "kwargs": {"hidden": [32]}}},
        "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
        "dataset": {"train": "builtin:digits"},
        "training": {"epochs": epochs, "batch_size": batch_size, "seed": 0},
    }


def _wait_for(predicate: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _background(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_shutdown_then_resume_to_success(sessions: sessionmaker[Session], settings: Any, teacher_file: Path) -> None:
    teacher_id = add_file(sessions, settings, teacher_file, purpose="teacher", format="safetensors")
    # Long enough that the shutdown lands mid-run: 8 epochs once did, and now finish before it arrives.
    job_id = add_job(sessions, digits_spec(teacher_id, epochs=80, batch_size=16))
    supervisor.reset_shutdown()
    thread, out = _background(lambda: run_job(job_id, settings=settings, sessions=sessions, worker_id="w1"))
    try:
        _wait_for(lambda: "checkpoint" in [e.type for e in events_of(sessions, job_id)])
        supervisor.request_shutdown()
        thread.join(timeout=60)
    finally:
        supervisor.reset_shutdown()
    assert out == ["queued"], [(e.type, e.message) for e in events_of(sessions, job_id)]
    job_dir = settings.artifact_dir / "jobs" / job_id
    assert (job_dir / "checkpoint.pt").is_file()
    # The job file the engine ran holds the teacher's local path, not its file id.
    engine_job = json.loads((job_dir / "job.json").read_text())
    assert engine_job["teacher"]["path"] == str(settings.upload_path(f"{teacher_id}.safetensors").resolve())
    assert "file_id" not in engine_job["teacher"]

    assert run_job(job_id, settings=settings, sessions=sessions, worker_id="w2") == "succeeded"
    job = get_job(sessions, job_id)
    assert job.status == "succeeded" and job.attempt == 1 and job.progress["fraction"] == 1.0
    events = events_of(sessions, job_id)
    started = [e for e in events if e.type == "started"]
    assert [e.data["resumed"] for e in started] == [False, True]
    # After the resume, training went on from a later epoch rather than from scratch.
    resumed_at = events.index(started[1])
    first_epoch_after = next(e for e in events[resumed_at:] if e.type == "progress").data["epoch"]
    assert first_epoch_after >= 2

    report = json.loads((job_dir / "report.json").read_text())
    assert job.metrics["student/top1"] == pytest.approx(report["student"]["top1"])
    assert "val/top1" in job.metrics
    with sessions() as session:
        artifacts = {a.name: a for a in session.execute(select(Artifact).where(Artifact.job_id == job_id)).scalars()}
        n_metric_rows = len(session.execute(select(JobMetric.id).where(JobMetric.job_id == job_id)).all())
    assert {"student.safetensors", "student.pt", "student.onnx", "report.json", "config.json"} <= set(artifacts)
    weights = artifacts["student.safetensors"]
    assert weights.format == "safetensors" and weights.tenant_id == "local"
    assert weights.sha256 == sha256_of(settings.artifact_path(weights.storage_path))
    assert artifacts["student.pt"].format == "torchscript" and artifacts["student.onnx"].format == "onnx"
    assert n_metric_rows >= 8 * 3  # per-epoch validation metrics at least, for eight epochs


def test_cancel_stops_a_real_run(sessions: sessionmaker[Session], settings: Any, teacher_file: Path) -> None:
    teacher_id = add_file(sessions, settings, teacher_file, purpose="teacher", format="safetensors")
    job_id = add_job(sessions, digits_spec(teacher_id, epochs=500, batch_size=16))
    thread, out = _background(lambda: run_job(job_id, settings=settings, sessions=sessions, worker_id="w1"))
    _wait_for(lambda: get_job(sessions, job_id).progress.get("step", 0) > 0)
    asked = time.monotonic()
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, status="cancelling"))
    thread.join(timeout=60)
    assert out == ["cancelled"]
    assert time.monotonic() - asked < 10
    job = get_job(sessions, job_id)
    assert job.status == "cancelled" and job.error is None and job.progress["fraction"] < 0.5
    types = [e.type for e in events_of(sessions, job_id)]
    assert "stopping" in types and types[-1] == "cancelled"


def test_a_job_past_its_time_budget_is_stopped_and_fails_with_a_clear_error(
    sessions: sessionmaker[Session], settings: Any, teacher_file: Path
) -> None:
    teacher_id = add_file(sessions, settings, teacher_file, purpose="teacher", format="safetensors")
    job_id = add_job(sessions, digits_spec(teacher_id, epochs=500, batch_size=16), time_budget_seconds=3)
    started = time.monotonic()
    assert run_job(job_id, settings=settings, sessions=sessions, worker_id="w1") == "failed"
    assert time.monotonic() - started < 30  # stopped at the budget, not after 500 epochs
    job = get_job(sessions, job_id)
    assert job.error["code"] == "time_budget_exceeded" and "3 s" in job.error["message"]
    types = [e.type for e in events_of(sessions, job_id)]
    assert "stopping" in types and types[-1] == "failed"
