"""Worker fixtures: a Postgres database of their own, really committed to, and job/file factories.

The supervisor commits from its own sessions (and, in some tests, from a Celery worker process), so the
rolled-back-transaction isolation of the API tests cannot apply. The worker tests get a database of their
own instead (`distillery_worker_test`, migrated with Alembic), emptied before each test.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import POSTGRES_SERVER_URL, create_database, require_service

WORKER_DATABASE = "distillery_worker_test"
FAKE_ENGINE = (sys.executable, str(Path(__file__).with_name("fake_engine.py")))
TENANT = "local"


@pytest.fixture(scope="session")
def worker_db_url() -> str:
    from app.migrate import upgrade_to_head

    require_service("postgres")
    create_database(WORKER_DATABASE)
    url = f"{POSTGRES_SERVER_URL}/{WORKER_DATABASE}"
    upgrade_to_head(url)
    return url


def _empty(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE artifacts, job_metrics, job_events, jobs, files"))
    engine.dispose()


@pytest.fixture
def sessions(worker_db_url: str) -> Iterator[sessionmaker[Session]]:
    from app.db import make_engine, make_sessionmaker

    _empty(worker_db_url)
    engine = make_engine(worker_db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """The embedded mode's database: a SQLite file migrated by the same Alembic revisions."""
    from app.db import make_engine, make_sessionmaker
    from app.migrate import upgrade_to_head

    url = f"sqlite:///{tmp_path / 'distillery.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, worker_db_url: str) -> Any:
    from worker.settings import WorkerSettings

    return WorkerSettings(
        database_url=worker_db_url,
        broker_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        upload_dir=tmp_path / "files",
        broker_dir=tmp_path / "broker",
        device="cpu",
        lease_seconds=5,
        heartbeat_seconds=1,
        flush_interval_seconds=0.2,
        cancel_poll_seconds=0.2,
        cancel_grace_seconds=10,
    )


def add_file(sessions: sessionmaker[Session], settings: Any, source: Path, *, purpose: str, format: str) -> str:
    """Store `source` as an uploaded file (copied under upload_dir) and return its id."""
    from app.models import File
    from worker.outcome import sha256_of

    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    with sessions.begin() as session:
        row = File(
            tenant_id=TENANT,
            purpose=purpose,
            filename=source.name,
            bytes=source.stat().st_size,
            sha256=sha256_of(source),
            format=format,
            meta={},
            storage_path="pending",
        )
        session.add(row)
        session.flush()
        row.storage_path = f"{row.id}{source.suffix}"
        shutil.copyfile(source, settings.upload_path(row.storage_path))
        return row.id


def add_job(sessions: sessionmaker[Session], spec: dict[str, Any], **columns: Any) -> str:
    from app.models import Job

    with sessions.begin() as session:
        job = Job(**{"tenant_id": TENANT, "status": "queued", "spec": spec, **columns})
        session.add(job)
        session.flush()
        return job.id


def get_job(sessions: sessionmaker[Session], job_id: str) -> Any:
    from app.models import Job

    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def events_of(sessions: sessionmaker[Session], job_id: str) -> list[Any]:
    from sqlalchemy import select

    from app.models import JobEvent

    with sessions() as session:
        rows = session.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).scalars()
        return list(rows)


def fake_spec(behaviour: str, teacher_id: str = "file_0") -> dict[str, Any]:
    """A valid job spec (the fake engine only reads the metadata; the teacher must exist if it is run)."""
    return {
        "teacher": {"file_id": teacher_id, "format": None, "architecture": None},
        "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
        "dataset": {"train": "builtin:digits"},
        "training": {"epochs": 2},
        "metadata": {"fake": behaviour},
    }


@pytest.fixture
def dummy_teacher(sessions: sessionmaker[Session], settings: Any, tmp_path: Path) -> str:
    """An uploaded 'teacher' file for the fake engine (which never opens it)."""
    path = tmp_path / "dummy.pt"
    path.write_bytes(b"not read by the fake engine")
    return add_file(sessions, settings, path, purpose="teacher", format="state_dict")


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MLP teacher for the 8x8 digits (random weights: the worker tests check plumbing, not accuracy)."""
    import torch
    from safetensors.torch import save_file

    from distill.config import ArchitectureSpec
    from distill.models import build_model

    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        arch = ArchitectureSpec(name="mlp", kwargs={"hidden": [32]})
        model = build_model(arch, input_shape=(1, 8, 8), num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
