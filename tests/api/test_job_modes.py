"""POST /v1/jobs with knowledge terms, layers and modes: accepted specs, and 422s that name the exact field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import assert_error, upload_ok
from tests.api.test_layers import CNN, cnn_safetensors
from tests.conftest import RecordingQueue

STUDENT: dict[str, Any] = {"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}}
FITNET = {
    "type": "feature",
    "method": "fitnet",
    "layers": [{"teacher": "features.block2", "student": "features.block2"}],
}


@pytest.fixture
def cnn_teacher_id(client: TestClient) -> str:
    return str(upload_ok(client, "teacher", cnn_safetensors(), "teacher.safetensors")["id"])


@pytest.fixture
def body(cnn_teacher_id: str) -> dict[str, Any]:
    """An offline job with a response term and a fitnet term between the two cnns' second blocks."""
    return {
        "teacher": {"file_id": cnn_teacher_id, "architecture": CNN},
        "student": {"architecture": STUDENT},
        "dataset": {"train": "builtin:digits"},
        "knowledge": {"lambda": 0.5, "terms": [{"type": "response", "temperature": 4.0}, copy.deepcopy(FITNET)]},
        "training": {"epochs": 1},
    }


def test_feature_knowledge_job_is_accepted_with_its_terms(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    terms = response.json()["spec"]["knowledge"]["terms"]
    assert [t["type"] for t in terms] == ["response", "feature"]
    assert terms[1]["layers"] == FITNET["layers"] and terms[1]["weight"] == 1.0 and terms[1]["hint_epochs"] == 0


def test_an_unknown_layer_names_the_field_and_the_closest_paths(client: TestClient, body: dict[str, Any]) -> None:
    body["knowledge"]["terms"][1]["layers"][0]["teacher"] = "features.blok2"
    error = assert_error(
        client.post("/v1/jobs", json=body), 422, "knowledge.terms[1].layers[0].teacher", "unknown_layer"
    )
    assert "features.blok2" in error["message"] and "features.block2" in error["message"]

    body["knowledge"]["terms"][1]["layers"][0] = {"teacher": "features.block2", "student": "feature.block1"}
    error = assert_error(
        client.post("/v1/jobs", json=body), 422, "knowledge.terms[1].layers[0].student", "unknown_layer"
    )
    assert "features.block1" in error["message"]


def test_fsp_layers_are_pairs_of_paths(client: TestClient, body: dict[str, Any]) -> None:
    body["knowledge"]["terms"][1] = {"type": "relation", "method": "fsp", "layers": FITNET["layers"]}
    assert_error(client.post("/v1/jobs", json=body), 422, "knowledge.terms[1].layers[0].teacher", "invalid_layers")
    pair = ["features.block1", "features.block2"]
    body["knowledge"]["terms"][1]["layers"] = [{"teacher": pair, "student": [pair[0], "features.blockk2"]}]
    assert_error(client.post("/v1/jobs", json=body), 422, "knowledge.terms[1].layers[0].student[1]", "unknown_layer")
    body["knowledge"]["terms"][1]["layers"] = [{"teacher": pair, "student": pair}]
    assert client.post("/v1/jobs", json=body).status_code == 201


@pytest.mark.parametrize(
    ("path", "value", "param"),
    [
        (("knowledge", "terms", 1, "method"), "fitnot", "knowledge.terms[1].method"),
        (("knowledge", "terms", 1, "hint_epochs"), -1, "knowledge.terms[1].hint_epochs"),
        (("knowledge", "terms", 1, "layers", 0, "teacher"), 3, "knowledge.terms[1].layers[0].teacher"),
        (("knowledge", "terms", 1, "layers", 0, "extra"), "x", "knowledge.terms[1].layers[0].extra"),
        (("knowledge", "terms", 0, "type"), "rsp", "knowledge.terms[0].type"),
        (("knowledge", "terms", 0, "temperature"), 0, "knowledge.terms[0].temperature"),
        (("knowledge", "type"), "response", "knowledge"),  # the short form and terms at once
    ],
)
def test_error_params_use_brackets_for_list_items(
    client: TestClient, body: dict[str, Any], path: tuple[str | int, ...], value: Any, param: str
) -> None:
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert_error(client.post("/v1/jobs", json=body), 422, param)


def test_a_term_without_its_type_names_the_type(client: TestClient, body: dict[str, Any]) -> None:
    del body["knowledge"]["terms"][1]["type"]
    assert_error(client.post("/v1/jobs", json=body), 422, "knowledge.terms[1].type")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"mode": "self"}, "teacher"),  # self mode has no teacher
        ({"mode": "offline", "teacher": None}, "teacher"),
        ({"self": {"method": "heads"}}, "self"),  # self settings outside mode self
        ({"mode": "self", "teacher": None, "self": {"method": "twins"}}, "self.method"),
        ({"mode": "self", "teacher": None, "self": {"method": "born_again", "generations": 1}}, "self.generations"),
        ({"teacher": {"init": "scratch", "architecture": CNN}}, "teacher.init"),  # scratch is online only
        ({"mode": "online", "teacher": {"init": "scratch"}}, "teacher.architecture"),
        ({"mode": "online", "teacher": {"init": "scratch", "architecture": CNN, "file_id": "f"}}, "teacher.file_id"),
        ({"mode": "online", "teacher": {"architecture": CNN}}, "teacher.file_id"),
        ({"mode": "online", "teacher": {"init": "warm", "architecture": CNN}}, "teacher.init"),
        ({"mode": "online"}, "knowledge.terms"),  # deep mutual learning: response terms only
        ({"mode": "together"}, "mode"),
    ],
)
def test_mode_rules_name_the_field(
    client: TestClient, body: dict[str, Any], queue: RecordingQueue, change: dict[str, Any], param: str
) -> None:
    body.update(change)
    if body.get("teacher") is None:
        del body["teacher"]
    error = assert_error(client.post("/v1/jobs", json=body), 422, param)
    assert not error["message"].startswith("Value error")
    assert queue.sent == []


def test_every_mode_is_accepted(client: TestClient, body: dict[str, Any], queue: RecordingQueue) -> None:
    response_only = {"lambda": 0.5, "terms": [{"type": "response", "temperature": 2.0}]}
    teacher = body.pop("teacher")
    specs = {
        "online from a checkpoint": {"mode": "online", "teacher": teacher, "knowledge": response_only},
        "online from scratch": {"mode": "online", "teacher": {"init": "scratch", "architecture": CNN}},
        "self heads": {"mode": "self", "self": {"method": "heads"}},
        "self born again": {"mode": "self", "self": {"method": "born_again", "generations": 2}},
        "self, defaults": {"mode": "self"},
    }
    for name, change in specs.items():
        spec = {**copy.deepcopy(body), "knowledge": response_only, **change}
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 201, (name, response.text)
        stored = response.json()["spec"]
        assert stored["mode"] == change["mode"]
        if change["mode"] == "self":
            assert stored["teacher"] is None and stored["self"]["method"] in ("heads", "born_again")
    assert len(queue.sent) == len(specs)


def test_heads_needs_a_student_with_stages(client: TestClient, body: dict[str, Any]) -> None:
    del body["teacher"]
    body.update(
        mode="self",
        knowledge={"type": "response"},
        student={"architecture": {"name": "mlp", "kwargs": {"hidden": []}}},
    )
    assert_error(client.post("/v1/jobs", json=body), 422, "self.method")


def test_a_student_is_an_architecture_or_an_uploaded_file_never_a_path(
    client: TestClient, body: dict[str, Any], cnn_teacher_id: str
) -> None:
    body["student"] = {"path": "/srv/student.onnx"}
    assert_error(client.post("/v1/jobs", json=body), 422, "student.path")
    body["student"] = {"architecture": STUDENT, "file_id": "file_x"}
    assert_error(client.post("/v1/jobs", json=body), 422, "student.architecture")
    body["student"] = {"file_id": "file_000000000000000000000000"}
    assert_error(client.post("/v1/jobs", json=body), 422, "student.file_id", "file_not_found")
    body["student"] = {"file_id": cnn_teacher_id}
    assert_error(client.post("/v1/jobs", json=body), 422, "student.file_id", "wrong_file_purpose")


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "knowledge", "terms", 1, "feature", "method"), "knowledge.terms[1].method"),
        (
            ("body", "knowledge", "terms", 1, "relation", "layers", 0, "student", "list[str]", 1),
            "knowledge.terms[1].layers[0].student[1]",
        ),
        (("body", "metadata", "Team"), "metadata.Team"),
        (("query", "input_shape"), "input_shape"),
        (("header", "Idempotency-Key"), "Idempotency-Key"),
        (("body",), None),
    ],
)
def test_error_param_renders_pydantic_locations_as_the_client_wrote_them(
    loc: tuple[str | int, ...], param: str | None
) -> None:
    from app.error_handlers import error_param

    assert error_param(loc) == param


def test_an_empty_idempotency_key_names_the_header(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(client.post("/v1/jobs", json=body, headers={"Idempotency-Key": ""}), 422, "Idempotency-Key")
