"""The embedded default (DESIGN §4): SQLite migrated on startup and the filesystem broker, nothing else."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.models import Job
from app.settings import Settings
from tests.api.conftest import upload_ok


def test_sqlite_app_migrates_accepts_a_job_and_dispatches_it(tmp_path: Path, torchscript_bytes: bytes) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/var/distillery.db",
        broker_url="filesystem://",
        broker_dir=tmp_path / "broker",
        upload_dir=tmp_path / "files",
        artifact_dir=tmp_path / "artifacts",
    )
    engine = make_engine(settings.database_url)
    try:
        with TestClient(create_app(settings, session_factory=make_sessionmaker(engine))) as client:
            assert client.get("/readyz").status_code == 200
            teacher = upload_ok(client, "teacher", torchscript_bytes)["id"]
            body = {
                "teacher": {"file_id": teacher},
                "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
                "dataset": {"train": "builtin:digits"},
                "training": {"epochs": 1},
            }
            created = client.post("/v1/jobs", json=body)
            assert created.status_code == 201, created.text
            assert created.json()["created_at"].endswith(("Z", "+00:00"))
        with make_sessionmaker(engine)() as session:
            job = session.scalars(select(Job)).one()
            assert job.dispatched_at is not None and job.dispatched_at.tzinfo is not None
        # The Celery message is a file in the broker folder, waiting for a worker.
        assert len(list((tmp_path / "broker" / "messages").iterdir())) == 1
    finally:
        engine.dispose()
