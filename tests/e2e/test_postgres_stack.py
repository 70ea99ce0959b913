"""The production shape on one machine: uvicorn and a Celery worker as processes, Postgres and Redis."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.client import FINISHED, job_body, submit, upload_digits, wait_until, walk_through
from tests.e2e.conftest import Digits, Stack
from tests.e2e.processes import start_api

pytestmark = pytest.mark.slow


def test_walk_through(pg_stack: Stack, digits: Digits) -> None:
    with httpx.Client(base_url=pg_stack.url, timeout=30, headers=pg_stack.headers) as http:
        walk_through(http, digits, logs=pg_stack.logs)


def test_cancel_a_running_job(pg_stack: Stack, digits: Digits) -> None:
    with httpx.Client(base_url=pg_stack.url, timeout=30, headers=pg_stack.headers) as http:
        ids = upload_digits(http, digits)
        job = submit(http, job_body(*ids, epochs=300, batch_size=16))
        deadline = time.monotonic() + 120
        while not http.get(f"/v1/jobs/{job['id']}").json()["progress"].get("step"):
            assert time.monotonic() < deadline, pg_stack.logs()
            time.sleep(0.2)
        response = http.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "cancelling"
        asked = time.monotonic()
        job = wait_until(http, job["id"], FINISHED, timeout=30, logs=pg_stack.logs)
        assert job["status"] == "cancelled" and time.monotonic() - asked < 10
        assert job["error"] is None and job["progress"]["fraction"] < 0.5
        types = [e["type"] for e in http.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
        assert types.index("cancel_requested") < types.index("stopping") < types.index("cancelled")


def test_a_job_accepted_while_the_broker_is_down_still_runs(
    pg_stack: Stack, digits: Digits, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A second API whose broker is unreachable (nothing listens on port 9): the job is accepted (201) with
    # no message sent, and the worker's reconciler sends it.
    env = {
        **pg_stack.env,
        "DISTILLERY_BROKER_URL": "redis://127.0.0.1:9/13",
        "DISTILLERY_BROKER_TIMEOUT_SECONDS": "0.5",
    }
    cut_off = start_api(env, tmp_path_factory.mktemp("api_no_broker"))
    try:
        with httpx.Client(base_url=cut_off.url, timeout=30, headers=pg_stack.headers) as http:
            ids = upload_digits(http, digits)
            job = submit(http, job_body(*ids, epochs=1))
            assert http.get("/readyz").status_code == 503
            assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    finally:
        cut_off.stop()
    with httpx.Client(base_url=pg_stack.url, timeout=30, headers=pg_stack.headers) as http:
        job = wait_until(http, job["id"], FINISHED, timeout=180, logs=pg_stack.logs)
    assert job["status"] == "succeeded"
    assert f"re-sent ['{job['id']}']" in pg_stack.worker.output()
