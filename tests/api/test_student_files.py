"""Students from any framework, uploaded as ONNX: the upload's header meta, layers through the probe, and
submission rules (purpose, tenant, operators the converter lacks) with errors at `student.file_id`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import File
from tests.api.conftest import INPUT_SHAPE, NUM_CLASSES, assert_error, tiny_teacher, upload, upload_ok

HIDDEN = 16


def dense_onnx(
    *, extra_op: str | None = None, batch: int | str = "N", input_shape: tuple[int, ...] = INPUT_SHAPE
) -> bytes:
    """An ONNX dense net built with onnx.helper, as any framework's exporter would write it:
    x (batch, 1, 8, 8) → Flatten → Gemm → Relu → Gemm → logits (batch, 10) [→ extra_op]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    features = int(np.prod(input_shape))
    weights = {
        "w1": rng.normal(0, 0.3, (HIDDEN, features)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(0, 0.3, (NUM_CLASSES, HIDDEN)),
        "b2": np.zeros(NUM_CLASSES),
    }
    last = "logits" if extra_op is None else "scores"
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden"], transB=1),
        helper.make_node("Relu", ["hidden"], ["hidden_relu"]),
        helper.make_node("Gemm", ["hidden_relu", "w2", "b2"], [last], transB=1),
    ]
    if extra_op is not None:
        nodes.append(helper.make_node(extra_op, [last], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, NUM_CLASSES])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), name=k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def student_onnx() -> bytes:
    return dense_onnx()


@pytest.fixture
def student_id(client: TestClient, student_onnx: bytes) -> str:
    return str(upload_ok(client, "student", student_onnx, "student.onnx")["id"])


def student_job(job_body: dict[str, Any], file_id: str, init: str = "random") -> dict[str, Any]:
    return {**job_body, "student": {"file_id": file_id, "init": init}}


# --- upload -------------------------------------------------------------------------------------------------


def test_an_onnx_student_records_its_header(client: TestClient, student_onnx: bytes) -> None:
    file = upload_ok(client, "student", student_onnx, "student.onnx")
    assert file["purpose"] == "student" and file["format"] == "onnx"
    assert file["meta"] == {
        "input_name": "x",
        "inputs": 1,
        "batch_dim": "N",
        "input_shape": list(INPUT_SHAPE),  # the symbolic batch dim dropped
        "output_shape": [NUM_CLASSES],
        "opset": 17,
        "nodes": 4,
        "operators": ["Flatten", "Gemm", "Relu"],
        "unsupported_operators": [],
    }
    assert client.get("/v1/files", params={"purpose": "student"}).json()["data"][0]["id"] == file["id"]


def test_operators_the_converter_lacks_are_named_at_upload(client: TestClient) -> None:
    file = upload_ok(client, "student", dense_onnx(extra_op="Hardmax"), "student.onnx")
    assert file["meta"]["unsupported_operators"] == ["Hardmax"]
    assert "Hardmax" in file["meta"]["operators"]


@pytest.mark.parametrize("kind", ["safetensors", "torchscript", "bytes"])
def test_a_student_must_be_onnx(
    client: TestClient, storage: dict[str, Path], safetensors_bytes: bytes, torchscript_bytes: bytes, kind: str
) -> None:
    content = {"safetensors": safetensors_bytes, "torchscript": torchscript_bytes, "bytes": b"not a model"}[kind]
    error = assert_error(upload(client, "student", content, "student.bin"), 422, "file", "unsupported_format")
    for words in ("purpose 'student'", "ONNX", "torch.onnx.export", "tf2onnx", "skl2onnx"):
        assert words in error["message"], error
    if kind != "bytes":
        assert kind.replace("torchscript", "TorchScript") in error["message"]
    assert [p for p in storage["upload_dir"].iterdir() if p.is_file()] == []


def test_an_onnx_teacher_records_its_input_shape_and_lists_layers_without_it(client: TestClient) -> None:
    buffer = io.BytesIO()
    torch.onnx.export(
        tiny_teacher(),
        (torch.zeros(1, *INPUT_SHAPE),),
        buffer,
        input_names=["images"],
        dynamic_axes={"images": {0: "batch"}},
        dynamo=False,
    )
    file = upload_ok(client, "teacher", buffer.getvalue(), "teacher.onnx")
    assert file["format"] == "onnx"
    meta = file["meta"]
    assert meta["input_name"] == "images" and meta["batch_dim"] == "batch"
    assert meta["input_shape"] == list(INPUT_SHAPE) and meta["output_shape"] == [NUM_CLASSES]
    assert "unsupported_operators" not in meta  # onnxruntime runs a teacher: every operator it knows is fine
    response = client.get(f"/v1/files/{file['id']}/layers")
    assert response.status_code == 200, response.text
    assert response.json()["input_shape"] == list(INPUT_SHAPE)
    assert [HIDDEN] in [entry["shape"] for entry in response.json()["data"]]


# --- layers -------------------------------------------------------------------------------------------------


def test_student_layers_are_the_converted_graphs_tensor_names(client: TestClient, student_id: str) -> None:
    response = client.get(f"/v1/files/{student_id}/layers")  # input_shape: the one recorded at upload
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["input_shape"] == list(INPUT_SHAPE) and body["note"] is None
    assert body["data"] == [
        {"path": "flat", "shape": [64], "type": "Flatten"},
        {"path": "hidden", "shape": [HIDDEN], "type": "Gemm"},
        {"path": "hidden_relu", "shape": [HIDDEN], "type": "Relu"},
        {"path": "logits", "shape": [NUM_CLASSES], "type": "Gemm"},
    ]
    url = f"/v1/files/{student_id}/layers"
    assert_error(client.get(url, params={"architecture": "mlp"}), 422, "architecture")
    assert_error(client.get(url, params={"input_shape": "3,8,8"}), 422, "input_shape", "shape_mismatch")


def test_student_layers_name_an_unsupported_operator(client: TestClient) -> None:
    file_id = upload_ok(client, "student", dense_onnx(extra_op="Hardmax"), "student.onnx")["id"]
    error = assert_error(client.get(f"/v1/files/{file_id}/layers"), 422, "file_id", "unsupported_operator")
    assert "Hardmax" in error["message"]


# --- jobs ---------------------------------------------------------------------------------------------------


def test_a_job_with_an_onnx_student_is_accepted_and_holds_the_file(
    client: TestClient, job_body: dict[str, Any], student_id: str
) -> None:
    response = client.post("/v1/jobs", json=student_job(job_body, student_id, init="weights"))
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["student"] == {"architecture": None, "file_id": student_id, "init": "weights"}
    error = assert_error(client.delete(f"/v1/files/{student_id}"), 409, None, "file_in_use")
    assert response.json()["id"] in error["message"]


def test_the_student_file_must_be_this_tenants_student(
    client: TestClient, db_session: Session, job_body: dict[str, Any], student_id: str
) -> None:
    # A teacher or a dataset is not a student, even a teacher in ONNX.
    for wrong in (job_body["teacher"]["file_id"], job_body["dataset"]["train"]):
        error = assert_error(
            client.post("/v1/jobs", json=student_job(job_body, wrong)), 422, "student.file_id", "wrong_file_purpose"
        )
        assert "'student'" in error["message"]
    row = db_session.scalars(select(File).where(File.id == student_id)).one()
    row.tenant_id = "someone_else"
    db_session.commit()
    assert_error(
        client.post("/v1/jobs", json=student_job(job_body, student_id)), 422, "student.file_id", "file_not_found"
    )


def test_an_unsupported_operator_is_refused_at_submission(client: TestClient, job_body: dict[str, Any]) -> None:
    file_id = upload_ok(client, "student", dense_onnx(extra_op="Hardmax"), "student.onnx")["id"]
    error = assert_error(
        client.post("/v1/jobs", json=student_job(job_body, file_id)), 422, "student.file_id", "unsupported_operator"
    )
    assert "Hardmax" in error["message"]
    assert client.get("/v1/jobs").json()["data"] == []  # nothing queued


def test_a_student_for_other_inputs_is_a_shape_mismatch_at_its_field(
    client: TestClient, job_body: dict[str, Any]
) -> None:
    file_id = upload_ok(client, "student", dense_onnx(input_shape=(1, 4, 4)), "student.onnx")["id"]
    error = assert_error(
        client.post("/v1/jobs", json=student_job(job_body, file_id)), 422, "student.file_id", "shape_mismatch"
    )
    assert "(1, 8, 8)" in error["message"]
