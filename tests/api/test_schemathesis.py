"""Schemathesis against the app's own /openapi.json (issue 7: no 500 for any client input).

One test per operation of the schema: generated requests, sent with a real API key to the app wired to the
test's rolled-back transaction. Every response must be no 5xx, and have a documented status code, content type
and headers, and a body that matches the documented schema (for every non-2xx: the error envelope).

Real objects as well as random ones: path parameters (and the file ids of a job body) are drawn about half of
the time from schemathesis dictionaries of placeholders (`real-teacher`, `real-finished-job`, …), which the test
swaps for the ids of objects of the test's tenant: an uploaded teacher and dataset, a queued job that uses both
(so deleting either is a 409) and a succeeded job with events, metrics and an artifact on disk; architecture
names come from the registry (webhook ids are generated only). `test_real_objects` then walks every file, job,
artifact and architecture operation once, deterministically, with real ids, an upload and a real submission,
and asserts each reached its object (200, 201, 204, 206, 304, 409, 416, and a finished job's event stream).

Bounded, so the file takes about a minute here and at most a few on a busy machine: MAX_EXAMPLES fuzzed cases
per operation, plus schemathesis's deterministic coverage cases (boundary and invalid values of each parameter,
unexpected methods); no deadline (a probe or a DB round trip on a loaded machine is not a finding), no
shrinking, derandomized, no example database. Streams of job events (SSE) are bounded as STREAMS below says.

`schemathesis.pytest.from_fixture` (a schema built per test, from a fixture) breaks on pytest 9.2 (it writes
`Function._nodeid`), so the schema is loaded once, at import, from the same `create_app().openapi()` that serves
/openapi.json (`test_schema_is_the_served_one` checks that), and each case is sent to the test's own app.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import ASGIClient
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from app.architectures.service import list_architectures
from app.jobs import repository as jobs_repository
from app.main import create_app
from app.models import utcnow
from app.settings import Settings
from tests.api.conftest import npz_bytes
from tests.api.test_artifacts import add_artifact
from tests.api.test_jobs import make_job
from tests.conftest import RecordingQueue

pytestmark = pytest.mark.postgres

MAX_EXAMPLES = 25  # fuzzed cases per operation; the coverage phase adds its own deterministic ones
REAL_ID_PROBABILITY = 0.5
ARTIFACT_NAME = "report.json"
ARTIFACT_CONTENT = b'{"top1": 0.5}'
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# STREAMS: GET /v1/jobs/{id}/events?stream=true (Server-Sent Events) ends only once the job has ended, and no
# worker runs here, so a stream of the queued job would block until the request timeout, with the event hub's
# poller still reading the test's connection while the next case runs. So a drawn stream is only ever of the
# finished job (its backlog, then `event: end`) or of an id that is not found (a 404 before any stream);
# `max-stream-events` and `request-timeout` bound a stream that did not end anyway.

# Placeholders the generator draws (see CONFIG); `swap_placeholders` turns them into the ids of `real_objects`.
FILES = ("real-teacher", "real-dataset")
JOBS = ("real-queued-job", "real-finished-job")
ARCHITECTURES = tuple(entry["name"] for entry in list_architectures())


def served_openapi() -> dict[str, Any]:
    """What GET /openapi.json serves: the schema depends on the code, not on settings or the database."""
    app = create_app(Settings(database_url="sqlite://"), session_factory=sessionmaker(), queue=RecordingQueue())
    return app.openapi()


OPENAPI = served_openapi()


def _bind(dictionary: str, probability: float = REAL_ID_PROBABILITY) -> dict[str, Any]:
    return {"dictionary": dictionary, "probability": probability}


CONFIG = schemathesis.Config.from_dict(
    {
        "dictionaries": {
            "files": {"values": list(FILES)},
            "teachers": {"values": [FILES[0]]},
            "datasets": {"values": [FILES[1], "builtin:digits"]},
            "jobs": {"values": list(JOBS)},
            "finished-job": {"values": [JOBS[1]]},
            "artifacts": {"values": [ARTIFACT_NAME]},
            "architectures": {"values": list(ARCHITECTURES)},
            "input-shapes": {"values": ["1,8,8", "3,32,32", "64"]},
        },
        "parameters": {
            "path.file_id": _bind("files"),
            "path.job_id": _bind("jobs"),
            "body.teacher.file_id": _bind("teachers"),
            "body.dataset.train": _bind("datasets"),
            "body.student.architecture.name": _bind("architectures"),
        },
        "operations": [
            {
                "include-path": "/v1/jobs/{job_id}/artifacts/{name}",
                "parameters": {"path.job_id": _bind("finished-job"), "path.name": _bind("artifacts")},
            },
            {
                "include-path": "/v1/architectures/{name}/layers",
                "parameters": {"path.name": _bind("architectures"), "query.input_shape": _bind("input-shapes")},
            },
        ],
        "generation": {"max-examples": MAX_EXAMPLES, "no-shrink": True, "deterministic": True, "database": "none"},
        "max-stream-events": 20,
        "request-timeout": 60,  # a submission runs the teacher in the sandboxed probe: seconds on a busy machine
    }
)
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


@pytest.fixture
def real_objects(job_body: dict[str, Any], db_session: Session, tenant: str, storage: dict[str, Any]) -> dict[str, str]:
    """Placeholder → the id of an object of the test's tenant: the uploaded teacher and dataset, a queued job
    whose spec uses both (so deleting either is a 409) and a succeeded job with events, metrics and an artifact.
    The queued job is a row, not a submission: a submission runs the teacher in the sandboxed probe (seconds),
    which `test_real_objects` does once, not every operation."""
    queued = make_job(db_session, tenant)
    queued.spec = job_body
    finished = make_job(db_session, tenant, status="succeeded", started_at=utcnow(), finished_at=utcnow())
    jobs_repository.add_event(db_session, job_id=finished.id, type="message", message="done", data={"epoch": 0})
    jobs_repository.add_metric(db_session, job_id=finished.id, name="val/top1", step=1, epoch=0, value=0.5)
    db_session.commit()
    add_artifact(db_session, finished, storage["artifact_dir"], ARTIFACT_NAME, ARTIFACT_CONTENT, "json")
    return {
        FILES[0]: job_body["teacher"]["file_id"],
        FILES[1]: job_body["dataset"]["train"],
        JOBS[0]: queued.id,
        JOBS[1]: finished.id,
    }


@pytest.fixture
def session(api: FastAPI, api_key: str, client: TestClient) -> ASGIClient:
    """A requests session that calls the test's app in-process with the tenant's key; `client` runs the app's
    lifespan around the test, as a server would."""
    # The ignore: schemathesis types the ASGI scope as a dict, Starlette as a MutableMapping.
    asgi = ASGIClient(api)  # type: ignore[arg-type]
    asgi.headers["Authorization"] = f"Bearer {api_key}"
    return asgi


def call(case: schemathesis.Case, api: FastAPI, session: ASGIClient) -> Any:
    return case.call_and_validate(session=session, app=api, checks=CHECKS)


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: report the first failure
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, request: pytest.FixtureRequest, api: FastAPI, session: ASGIClient
) -> None:
    swap_placeholders(case, request)
    call(case, api, session)


def swap_placeholders(case: schemathesis.Case, request: pytest.FixtureRequest) -> None:
    """Placeholders drawn for path parameters and for a job's file ids → the ids of `real_objects`, which
    are created (a few ms) only for the operations that drew one."""

    def is_placeholder(value: object) -> bool:
        return isinstance(value, str) and value in (*FILES, *JOBS)

    parameters = case.path_parameters or {}
    if parameters.get("job_id") == JOBS[0] and is_streamed(case):
        parameters["job_id"] = JOBS[1]  # see STREAMS
    for name, value in parameters.items():
        if is_placeholder(value):
            parameters[name] = request.getfixturevalue("real_objects")[value]
    if case.operation.path == "/v1/jobs" and isinstance(case.body, dict):
        for parent, key in (("teacher", "file_id"), ("dataset", "train")):
            part = case.body.get(parent)
            if isinstance(part, dict) and is_placeholder(part.get(key)):
                part[key] = request.getfixturevalue("real_objects")[part[key]]


def is_streamed(case: schemathesis.Case) -> bool:
    """GET /v1/jobs/{id}/events?stream=true, as FastAPI reads a boolean."""
    value = (case.query or {}).get("stream")
    return case.operation.path.endswith("/events") and str(value).lower() in ("1", "on", "t", "true", "y", "yes")


def test_schema_is_the_served_one(client: TestClient) -> None:
    assert client.get("/openapi.json").json() == OPENAPI


def test_real_objects(
    api: FastAPI, session: ASGIClient, real_objects: dict[str, str], job_body: dict[str, Any]
) -> None:
    """Every file, job, artifact and architecture operation, called with the ids of real objects (and an upload
    and a submission): each must reach its object and answer as documented."""
    teacher, dataset, _, finished = (real_objects[key] for key in (*FILES, *JOBS))
    artifact = f"/v1/jobs/{finished}/artifacts/{ARTIFACT_NAME}"
    etag = f'"{hashlib.sha256(ARTIFACT_CONTENT).hexdigest()}"'

    def check(method: str, path: str, status: int, **kwargs: Any) -> Any:
        template, parameters = match_operation(path)
        case = schema[template][method].Case(path_parameters=parameters, **kwargs)
        response = call(case, api, session)
        assert response.status_code == status, (method, path, response.text)
        return response

    upload = {"file": npz_bytes(), "purpose": "dataset"}
    uploaded = check("POST", "/v1/files", 201, body=upload, media_type="multipart/form-data").json()["id"]
    check("GET", f"/v1/files/{teacher}", 200)
    assert check("GET", f"/v1/files/{teacher}/layers", 200, query={"input_shape": "1,8,8"}).json()["data"]
    check("DELETE", f"/v1/files/{dataset}", 409)  # the queued job uses it
    check("DELETE", f"/v1/files/{uploaded}", 204)
    check("GET", f"/v1/files/{uploaded}", 404)

    submitted = check("POST", "/v1/jobs", 201, body=job_body, headers={"Idempotency-Key": "schemathesis"}).json()
    replayed = check("POST", "/v1/jobs", 200, body=job_body, headers={"Idempotency-Key": "schemathesis"}).json()
    assert replayed["id"] == submitted["id"]
    stream = check("GET", f"/v1/jobs/{finished}/events", 200, query={"stream": "true"})  # see STREAMS
    assert stream.headers["content-type"][0].startswith("text/event-stream") and "event: end" in stream.text
    for job in (submitted["id"], finished):
        job_etag = check("GET", f"/v1/jobs/{job}", 200).headers["etag"][0]
        check("GET", f"/v1/jobs/{job}", 304, headers={"If-None-Match": job_etag})
        check("GET", f"/v1/jobs/{job}/events", 200)
        check("GET", f"/v1/jobs/{job}/metrics", 200)
        check("GET", f"/v1/jobs/{job}/artifacts", 200)
    assert check("GET", f"/v1/jobs/{finished}/metrics", 200).json()["data"][0]["name"] == "val/top1"
    assert check("GET", artifact, 200).content == ARTIFACT_CONTENT
    assert check("GET", artifact, 206, headers={"Range": "bytes=0-3"}).content == ARTIFACT_CONTENT[:4]
    check("GET", artifact, 304, headers={"If-None-Match": etag})
    check("GET", artifact, 416, headers={"Range": "bytes=999-"})
    check("POST", f"/v1/jobs/{submitted['id']}/cancel", 200)
    check("POST", f"/v1/jobs/{submitted['id']}/cancel", 409)
    check("POST", f"/v1/jobs/{finished}/cancel", 409)

    families: dict[str, str] = {}
    for name in ARCHITECTURES:  # one of each family: resnet8, resnet20, … are resnet with other kwargs
        families.setdefault(name.rstrip("0123456789_x"), name)
    for name in families.values():
        check("GET", f"/v1/architectures/{name}/layers", 200, query={"input_shape": "3,32,32"})
    check("GET", "/v1/architectures/mlp/layers", 200, query={"input_shape": "1,8,8", "kwargs": '{"hidden": [8]}'})


def match_operation(path: str) -> tuple[str, dict[str, str]]:
    """The schema's path template that `path` fills in, and the values it fills in."""
    for template in OPENAPI["paths"]:
        pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))
        found = re.fullmatch(pattern, path)
        if found:
            return template, found.groupdict()
    raise AssertionError(f"no operation for {path}")
