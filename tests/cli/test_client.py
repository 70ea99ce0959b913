"""distillery.client against the real stack (uvicorn + Celery on Postgres and Redis): the sync and the async
client each upload, submit, follow, wait and download; errors come back as the envelope says."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from distillery.client import AsyncClient, Client, DistilleryError
from distillery.models import Job
from tests.e2e.client import job_body
from tests.e2e.conftest import Digits, Stack
from tests.e2e.processes import free_port

pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sync_round_trip(pg_stack: Stack, digits: Digits, tmp_path: Path) -> None:
    with Client(pg_stack.url, pg_stack.key, poll_interval=0.25) as client:
        teacher = client.upload_file(digits.teacher, purpose="teacher")
        train = client.upload_file(digits.train, purpose="dataset")
        validation = client.upload_file(digits.validation, purpose="dataset")
        assert (teacher.format, train.format) == ("safetensors", "npz")
        assert teacher.sha256 == sha256(digits.teacher) and client.get_file(train.id).meta["num_examples"] == 1400

        body = job_body(teacher.id, train.id, validation.id, epochs=1)
        job = client.create_job(body, idempotency_key="cli-test-sync")
        assert job.status == "queued" and isinstance(job, Job)
        assert client.create_job(body, idempotency_key="cli-test-sync").id == job.id  # a retry is the same job

        job = client.wait(job.id, timeout=180)
        assert job.status == "succeeded", pg_stack.logs()
        assert job.progress.fraction == 1.0 and job.finished_at is not None

        # The job is over: follow() replays its whole log and ends by itself.
        events = list(client.follow(job.id))
        assert events[-1].type == "succeeded" and [e.id for e in events] == sorted({e.id for e in events})
        assert [e.id for e in client.follow(job.id, after=events[-3].id)] == [e.id for e in events[-2:]]
        assert client.events(job.id, after=events[-2].id).data == events[-1:]

        assert job.id in {j.id for j in client.list_jobs(status="succeeded", page_size=1)}  # pages of one
        assert [m.epoch for m in client.metrics(job.id, name="val/top1")] == [1]

        artifacts = {a.name: a for a in client.list_artifacts(job.id)}
        path = client.download_artifact(job.id, "student.onnx", f"{tmp_path}/out/")  # a new folder
        assert path == tmp_path / "out" / "student.onnx" and sha256(path) == artifacts["student.onnx"].sha256
        report = json.loads(client.read_artifact(job.id, "report.json"))
        assert report["student"]["top1"] == job.metrics["student/top1"]
        with pytest.raises(DistilleryError) as mismatch:  # what it was promised is checked
            client.download_artifact(job.id, "config.json", tmp_path / "config.json", sha256="0" * 64)
        assert mismatch.value.code == "checksum_mismatch" and not list(tmp_path.glob("*config.json*"))


def test_async_round_trip(pg_stack: Stack, digits: Digits, tmp_path: Path) -> None:
    async def scenario() -> tuple[Job, list[Any], Path, set[str]]:
        async with AsyncClient(pg_stack.url, pg_stack.key, poll_interval=0.25) as client:
            teacher, train, validation = await asyncio.gather(
                client.upload_file(digits.teacher, purpose="teacher"),
                client.upload_file(digits.train, purpose="dataset"),
                client.upload_file(digits.validation, purpose="dataset"),
            )
            job = await client.create_job(job_body(teacher.id, train.id, validation.id, epochs=1))
            # Follow the log while the job runs: the iteration ends when the job does.
            events = [event async for event in client.follow(job.id)]
            job = await client.wait(job.id, timeout=60)
            path = await client.download_artifact(job.id, "student.safetensors", tmp_path)
            listed = {j.id async for j in client.list_jobs()}
            return job, events, path, listed

    job, events, path, listed = asyncio.run(scenario())
    assert job.status == "succeeded", pg_stack.logs()
    types = [e.type for e in events]
    assert types[0] == "queued" and types[-1] == "succeeded" and "progress" in types
    assert job.id in listed
    weights = {a.name: a for a in job.artifacts}["student.safetensors"]
    assert path.stat().st_size == weights.bytes and sha256(path) == weights.sha256


def test_errors_are_the_envelope(pg_stack: Stack) -> None:
    with Client(pg_stack.url, pg_stack.key) as client:
        with pytest.raises(DistilleryError) as invalid:
            client.create_job(
                {
                    "student": {"architecture": {"name": "mlp"}},
                    "dataset": {"train": "builtin:digits"},
                    "mode": "self",
                    "self": {"method": "heads"},
                    "training": {"epochs": 0},
                }
            )
        assert (invalid.value.status, invalid.value.code, invalid.value.param) == (
            422,
            "invalid_request",
            "training.epochs",
        )
        assert str(invalid.value).startswith("training.epochs: ") and invalid.value.is_client_error
        with pytest.raises(DistilleryError) as missing:
            client.get_job("job_nope")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
    with Client(pg_stack.url, "dk_live_wrong") as stranger, pytest.raises(DistilleryError) as unauthorized:
        next(stranger.list_jobs())
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
    assert unauthorized.value.message == "the API key is not valid"
    with Client(f"http://127.0.0.1:{free_port()}", retries=0) as nowhere, pytest.raises(DistilleryError) as away:
        nowhere.ping()
    assert away.value.status is None and away.value.code == "connection_error" and not away.value.is_client_error


# --- the two ways follow() reads a log, with the server's answers scripted --------------------------------
# The real stack serves whichever way it implements; these pin both, and a stream that breaks off mid-way.


def _event(event_id: int, kind: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "created_at": "2025-01-01T00:00:00Z",
        "level": "info",
        "type": kind,
        "message": kind,
        "data": {},
    }


def _job(status: str) -> dict[str, Any]:
    return {"id": "job_1", "status": status, "created_at": "2025-01-01T00:00:00Z"}


def test_follow_reads_server_sent_events_and_resumes_a_broken_stream() -> None:
    asked: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/job_1":
            return httpx.Response(200, json=_job("running"))
        asked.append(request)
        sse = {"content-type": "text/event-stream; charset=utf-8"}
        if len(asked) == 1:  # two events, then the connection ends without `event: end`
            body = "retry: 2000\n\n: keepalive\n\n" + "".join(
                f"id: {i}\ndata: {json.dumps(_event(i, kind))}\n\n" for i, kind in ((1, "queued"), (2, "started"))
            )
        else:
            body = (
                f'id: 3\ndata: {json.dumps(_event(3, "succeeded"))}\n\nevent: end\ndata: {{"status": "succeeded"}}\n\n'
            )
        return httpx.Response(200, headers=sse, content=body.encode())

    with Client("http://test", "k", poll_interval=0, transport=httpx.MockTransport(server)) as client:
        assert [(e.id, e.type) for e in client.follow("job_1")] == [(1, "queued"), (2, "started"), (3, "succeeded")]
    assert [r.headers.get("last-event-id") for r in asked] == [None, "2"]
    assert [r.url.params["after"] for r in asked] == ["0", "2"]
    assert asked[0].headers["accept"] == "text/event-stream" and asked[0].url.params["stream"] == "true"


def test_follow_polls_a_server_that_does_not_stream() -> None:
    statuses = iter(["running", "succeeded"])
    log = [_event(1, "queued"), _event(2, "started"), _event(3, "succeeded")]
    visible = iter([2, 3])  # how many events exist at each poll

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/job_1":
            return httpx.Response(200, json=_job(next(statuses)))
        if request.url.params.get("stream"):
            return httpx.Response(200, json={"data": [], "has_more": False})  # stream=true not understood
        after = int(request.url.params["after"])
        return httpx.Response(
            200, json={"data": [e for e in log[: next(visible)] if e["id"] > after], "has_more": False}
        )

    with Client("http://test", "k", poll_interval=0, transport=httpx.MockTransport(server)) as client:
        assert [e.id for e in client.follow("job_1")] == [1, 2, 3]
