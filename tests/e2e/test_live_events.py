"""Live progress through the real stack: Server-Sent Events from a real uvicorn while a real worker trains,
and ETag polling.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.client import job_body, submit, upload_digits
from tests.e2e.conftest import Digits, Stack

pytestmark = pytest.mark.slow


def read_stream(http: httpx.Client, job_id: str, headers: dict[str, str] | None = None) -> list[tuple[float, dict]]:
    """(seconds since the request, message) for each SSE message until the stream ends."""
    start = time.monotonic()
    messages: list[tuple[float, dict]] = []
    fields: dict[str, str] = {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events?stream=true", headers=headers, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line:
                if fields and set(fields) != {"retry"}:
                    messages.append((time.monotonic() - start, fields))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return messages


def test_events_stream_live_while_the_job_trains_and_the_stream_ends_with_it(pg_stack: Stack, digits: Digits) -> None:
    with httpx.Client(base_url=pg_stack.url, timeout=30, headers=pg_stack.headers) as http:
        job = submit(http, job_body(*upload_digits(http, digits), epochs=6, batch_size=16))
        messages = read_stream(http, job["id"])
        final = http.get(f"/v1/jobs/{job['id']}")

        events = [json.loads(m["data"]) for _, m in messages if "id" in m]
        assert messages[-1][1] == {"event": "end", "data": '{"status": "succeeded"}'}
        assert final.json()["status"] == "succeeded"
        # Every event the log has, in order, once; they arrived while it trained, not all at the end.
        logged = http.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()["data"]
        assert [e["id"] for e in events] == [e["id"] for e in logged]
        started_at = next(t for t, m in messages if "id" in m and json.loads(m["data"])["type"] == "started")
        assert messages[-1][0] - started_at > 1.0, messages

        # A watcher that reconnects with Last-Event-ID gets only what came after.
        resumed = read_stream(http, job["id"], headers={"Last-Event-ID": str(events[1]["id"])})
        assert [int(m["id"]) for _, m in resumed if "id" in m] == [e["id"] for e in events[2:]]
        assert resumed[-1][1]["event"] == "end"

        # The finished job's ETag: a poll with it costs a 304.
        etag = final.headers["etag"]
        assert http.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag}).status_code == 304
