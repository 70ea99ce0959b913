"""The API's /metrics as Prometheus reads it: parsed with prometheus_client's own parser.

Job series are computed from the whole jobs table (every tenant), which other tests may have written to;
so each check compares two scrapes around the rows this test adds.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from app.models import Job, utcnow

ID_VALUE = re.compile(r"(job|file|whk|key)_[0-9a-z]{8,}")
FORBIDDEN_LABELS = {"id", "job_id", "file_id", "tenant", "tenant_id", "path", "url", "worker_id"}


def make_job(session: Session, tenant: str, status: str = "queued", **fields: Any) -> Job:
    job = Job(**{"tenant_id": tenant, "status": status, "spec": {}, "progress": {}, "metrics": {}, **fields})
    session.add(job)
    session.commit()
    return job


def scrape(client: TestClient) -> dict[str, Metric]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """One sample's value (0 when absent), e.g. value(f, "distillery_job_queue_wait_seconds_bucket", le="60.0")."""
    for family in families.values():
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_names_types_and_labels_follow_prometheus_conventions(client: TestClient) -> None:
    client.get("/healthz")
    families = scrape(client)
    expected = {
        "distillery_jobs": "gauge",
        "distillery_queue_depth": "gauge",
        "distillery_job_duration_seconds": "histogram",
        "distillery_job_queue_wait_seconds": "histogram",
        "distillery_training_steps_per_second": "gauge",
        "distillery_training_samples_per_second": "gauge",
        "distillery_http_request_duration_seconds": "histogram",
        "distillery_database_up": "gauge",
    }
    for name, kind in expected.items():
        assert name in families, name
        assert families[name].type == kind, (name, families[name].type)
        assert families[name].documentation, f"{name} has no help text"
    for name, family in families.items():
        if not name.startswith("distillery_"):
            continue
        assert re.fullmatch(r"distillery_[a-z0-9_]+", name), name
        # Base units only: seconds and bytes, never milliseconds or minutes.
        assert not re.search(r"_(ms|milliseconds|minutes|hours|kb|mb|megabytes)(_|$)", name), name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        else:
            assert not name.endswith("_total"), f"{name}: _total is for counters"
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (name, sample.labels)
    assert value(families, "distillery_database_up") == 1.0
    statuses = {s.labels["status"] for s in families["distillery_jobs"].samples}
    assert statuses == {"queued", "running", "cancelling", "succeeded", "failed", "cancelled"}


def test_queue_depth_and_time_in_queue(client: TestClient, db_session: Session, tenant: str) -> None:
    before = scrape(client)
    now = utcnow()
    for _ in range(3):
        make_job(db_session, tenant, status="queued")
    # Waited 45 s in the queue, then ran 40 s.
    make_job(
        db_session,
        tenant,
        status="succeeded",
        created_at=now - timedelta(seconds=100),
        started_at=now - timedelta(seconds=55),
        finished_at=now - timedelta(seconds=15),
    )
    after = scrape(client)

    def delta(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    assert delta("distillery_queue_depth") == 3
    assert delta("distillery_jobs", status="queued") == 3
    assert delta("distillery_job_queue_wait_seconds_count") == 1
    assert delta("distillery_job_queue_wait_seconds_bucket", le="30.0") == 0
    assert delta("distillery_job_queue_wait_seconds_bucket", le="60.0") == 1
    assert abs(delta("distillery_job_queue_wait_seconds_sum") - 45.0) < 0.01
    assert delta("distillery_job_duration_seconds_bucket", le="30.0", status="succeeded") == 0
    assert delta("distillery_job_duration_seconds_bucket", le="60.0", status="succeeded") == 1


def test_training_throughput_of_running_jobs(client: TestClient, db_session: Session, tenant: str) -> None:
    before = scrape(client)
    now = utcnow()
    progress: dict[str, Any] = {"phase": "train", "step": 100, "steps": 300, "eta_seconds": 20.0, "fraction": 0.33}
    make_job(
        db_session,
        tenant,
        status="running",
        spec={"training": {"batch_size": 32}},
        progress=progress,
        created_at=now - timedelta(seconds=10),
        started_at=now - timedelta(seconds=5),
    )
    # No estimate yet (the first steps): no rate, rather than a made-up one.
    make_job(db_session, tenant, status="running", progress={"step": 0, "steps": 300, "eta_seconds": None})
    after = scrape(client)
    steps = value(after, "distillery_training_steps_per_second") - value(before, "distillery_training_steps_per_second")
    samples = value(after, "distillery_training_samples_per_second") - value(
        before, "distillery_training_samples_per_second"
    )
    assert abs(steps - 10.0) < 1e-6  # 200 steps left in 20 s
    assert abs(samples - 320.0) < 1e-6  # x 32 examples per step


def test_http_latency_is_labelled_by_route_template_never_by_id(
    client: TestClient, db_session: Session, tenant: str
) -> None:
    job = make_job(db_session, tenant, status="queued")
    assert client.get(f"/v1/jobs/{job.id}").status_code == 200
    assert client.get("/v1/jobs/job_00000000000000000000nope").status_code == 404
    assert client.get(f"/v1/jobs/{job.id}/events").status_code == 200
    assert client.get("/v1/no/such/path/file_1234567890abcdef").status_code == 404
    families = scrape(client)
    http = families["distillery_http_request_duration_seconds"]
    routes = {s.labels["route"] for s in http.samples}
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "unmatched"} <= routes
    counts = {(s.labels["route"], s.labels["status"]): s.value for s in http.samples if s.name.endswith("_count")}
    assert counts[("/v1/jobs/{job_id}", "200")] == 1 and counts[("/v1/jobs/{job_id}", "404")] == 1
    assert counts[("unmatched", "404")] == 1
    for family in families.values():
        for sample in family.samples:
            for label, label_value in sample.labels.items():
                assert not ID_VALUE.search(label_value), (sample.name, label, label_value)
                assert job.id not in label_value
