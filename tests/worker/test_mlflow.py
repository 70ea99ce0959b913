"""MLflow tracking (worker/mlflow_tracking.py) against a real `mlflow server` that the test starts on localhost.

A real tiny job on the built-in digits is stopped by a worker shutdown after a checkpoint and resumed to its
end: one MLflow run throughout, with the spec as params, per-epoch metrics, the report and the exports as
artifacts, and a registered model version tagged with the job id. MLflow unreachable (a closed port) or
hanging (a socket that never answers) costs a job nothing but warnings.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.jobs.schemas import JobRead
from app.models import Job
from tests.conftest import POSTGRES_SERVER_URL, create_database, require_service, service_unavailable
from tests.worker.conftest import FAKE_ENGINE, add_file, add_job, events_of, fake_spec, get_job
from tests.worker.test_supervisor_engine import digits_spec
from worker import supervisor
from worker.runner import run_job

MLFLOW_DATABASE = "distillery_worker_mlflow_test"


@pytest.fixture(scope="module")
def worker_db_url() -> str:
    """A database of this module's own: the worker fixtures empty theirs before every test, which would
    pull the job from under a run that takes minutes if another test run shares it."""
    from app.migrate import upgrade_to_head

    require_service("postgres")
    create_database(MLFLOW_DATABASE)
    url = f"{POSTGRES_SERVER_URL}/{MLFLOW_DATABASE}"
    upgrade_to_head(url)
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a free port with a SQLite store and proxied artifacts in a temporary folder."""
    try:
        importlib.metadata.version("mlflow")  # the full package: mlflow-skinny has no server
    except importlib.metadata.PackageNotFoundError:
        service_unavailable("MLflow", "the mlflow package (the server) is not installed: pip install -e '.[dev]'")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")]
    # No background job runner (huey consumers) and no usage reporting: the test needs neither.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = root / "server.log"
    with open(log, "ab") as out:
        server = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # a busy machine takes a minute to import it
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer within 240 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: uvicorn's worker goes with it
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _wait_for(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_job_is_one_mlflow_run_across_a_resume(
    sessions: sessionmaker[Session], settings: Any, teacher_file: Path, mlflow_server: str
) -> None:
    from mlflow import MlflowClient

    settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_server, "mlflow_model_name": "students"})
    teacher_id = add_file(sessions, settings, teacher_file, purpose="teacher", format="safetensors")
    epochs = 20  # enough that the shutdown after the first checkpoint lands mid-run on a fast, idle machine
    job_id = add_job(sessions, digits_spec(teacher_id, epochs=epochs, batch_size=16))

    # Attempt 1: the worker shuts down after the first checkpoint; the job goes back to the queue.
    supervisor.reset_shutdown()
    out: list[str] = []
    thread = threading.Thread(
        target=lambda: out.append(run_job(job_id, settings=settings, sessions=sessions, worker_id="w1")), daemon=True
    )
    thread.start()
    try:
        _wait_for(lambda: "checkpoint" in [e.type for e in events_of(sessions, job_id)])
        supervisor.request_shutdown()
        thread.join(timeout=120)
    finally:
        supervisor.reset_shutdown()
    assert out == ["queued"]
    run_id = get_job(sessions, job_id).mlflow_run_id
    assert run_id, "the run id is stored as soon as the run exists"
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(run_id).info.status == "RUNNING"  # a job given back is not over

    # Attempt 2 resumes the job, and the same run.
    assert run_job(job_id, settings=settings, sessions=sessions, worker_id="w2") == "succeeded"
    job = get_job(sessions, job_id)
    assert job.mlflow_run_id == run_id
    with sessions() as session:
        assert JobRead.model_validate(session.get(Job, job_id)).mlflow_run_id == run_id

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == job_id
    assert run.data.tags["distillery.job_id"] == job_id and run.data.tags["distillery.attempt"] == str(job.attempt)
    runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.`distillery.job_id` = '{job_id}'")
    assert [r.info.run_id for r in runs] == [run_id]  # one run for the job, not one per attempt
    params = run.data.params
    assert params["training.epochs"] == str(epochs) and params["training.batch_size"] == "16"
    assert params["teacher.file_id"] == teacher_id and params["student.architecture.name"] == "mlp"
    assert params["student.architecture.kwargs.hidden.0"] == "8"

    # Per-epoch metrics from both attempts (MLflow step = epoch), and the report's results.
    for name in ("val/top1", "train/loss"):
        history = client.get_metric_history(run_id, name)
        assert {m.step for m in history} == set(range(1, epochs + 1)), name
    assert run.data.metrics["student/top1"] == pytest.approx(job.metrics["student/top1"])

    root = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.json", "config.json", "student"} <= root
    student = {a.path for a in client.list_artifacts(run_id, "student")}
    assert {"student/student.safetensors", "student/student.onnx", "student/student.pt"} <= student

    versions = client.search_model_versions(f"tags.job_id = '{job_id}'")
    assert len(versions) == 1
    version = versions[0]
    assert version.name == "students" and version.run_id == run_id and version.source == f"runs:/{run_id}/student"
    assert version.tags["job_id"] == job_id
    assert run.data.tags["distillery.model_version"] == f"students/{version.version}"


def test_an_unreachable_mlflow_never_fails_a_job(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = _free_port()  # nothing listens there: connection refused
    settings = settings.model_copy(
        update={"mlflow_tracking_uri": f"http://127.0.0.1:{closed}", "mlflow_finish_seconds": 10.0}
    )
    job_id = add_job(sessions, fake_spec("succeed", dummy_teacher))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="worker.mlflow_tracking"):
        status = run_job(job_id, settings=settings, sessions=sessions, worker_id="w1", engine_command=FAKE_ENGINE)
    assert status == "succeeded"
    assert time.monotonic() - started < 30
    job = get_job(sessions, job_id)
    assert job.status == "succeeded" and job.mlflow_run_id is None and job.metrics["val/top1"] == pytest.approx(0.8)
    assert any("MLflow could not start the run" in r.getMessage() for r in caplog.records)


def test_a_hanging_mlflow_holds_up_a_job_no_longer_than_its_timeouts(
    sessions: sessionmaker[Session], settings: Any, dummy_teacher: str
) -> None:
    """A server that accepts connections and never answers: each call waits out its timeout, once."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # connections complete in the backlog and are never read
        port = listener.getsockname()[1]
        settings = settings.model_copy(
            update={
                "mlflow_tracking_uri": f"http://127.0.0.1:{port}",
                "mlflow_timeout_seconds": 1,
                "mlflow_finish_seconds": 8.0,
            }
        )
        job_id = add_job(sessions, fake_spec("succeed", dummy_teacher))
        started = time.monotonic()
        status = run_job(job_id, settings=settings, sessions=sessions, worker_id="w1", engine_command=FAKE_ENGINE)
        elapsed = time.monotonic() - started
    assert status == "succeeded" and get_job(sessions, job_id).status == "succeeded"
    assert elapsed < 25  # the fake run, plus at most mlflow_finish_seconds waiting for MLflow
