"""GET /v1/architectures, /v1/architectures/{name}/layers and /v1/files/{id}/layers (through the real probe)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import File
from app.probe import ProbeLimits, bwrap_works, run_probe
from app.settings import Settings
from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.models import STUDENTS, build_model
from tests.api.conftest import INPUT_SHAPE, NUM_CLASSES, assert_error, npz_bytes, tiny_teacher, upload_ok
from tests.conftest import RecordingQueue

CNN: dict[str, Any] = {"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}}


def cnn_safetensors(*, input_shape: str | None = None) -> bytes:
    from safetensors.torch import save

    torch.manual_seed(0)
    model = build_model(ArchitectureSpec(**CNN), input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES)
    metadata = None if input_shape is None else {"input_shape": input_shape}
    return save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=metadata)


def layers_by_path(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"input_shape", "data", "note"}, body
    return {entry["path"]: entry for entry in body["data"]}


# --- the registry -------------------------------------------------------------------------------------------


def test_architectures_list_the_registry_with_defaults(client: TestClient) -> None:
    response = client.get("/v1/architectures")
    assert response.status_code == 200
    entries = {a["name"]: a for a in response.json()["data"]}
    assert {"mlp", "cnn", "resnet", "resnet8x4", "resnet32x4"} <= set(entries)
    assert set(entries) == set(STUDENTS.names())
    cnn = entries["cnn"]
    assert cnn["description"] and set(cnn) == {"name", "description", "parameters", "required"}
    assert cnn["parameters"]["channels"] == [16, 32] and cnn["parameters"]["hidden"] == 64
    # inferred in a job, but required by the builder: shown, with no default
    assert cnn["parameters"]["input_shape"] is None and {"input_shape", "num_classes"} <= set(cnn["required"])


def test_architecture_layers_give_paths_with_shapes(client: TestClient) -> None:
    response = client.get(
        "/v1/architectures/cnn/layers",
        params={"input_shape": "1,8,8", "num_classes": 3, "kwargs": json.dumps(CNN["kwargs"])},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    layers = layers_by_path(body)
    assert body["input_shape"] == [1, 8, 8] and body["note"] is None
    assert layers["features.block2"] == {"path": "features.block2", "shape": [8, 2, 2], "type": "Sequential"}
    assert layers["features.block1.0"]["type"] == "Conv2d" and layers["fc"]["shape"] == [3]
    assert body["data"][-1]["path"] == "fc"  # call order


@pytest.mark.parametrize("name", STUDENTS.names())
def test_every_registered_architecture_lists_its_layers(client: TestClient, name: str) -> None:
    response = client.get(f"/v1/architectures/{name}/layers", params={"input_shape": "3,32,32"})
    assert response.status_code == 200, response.text
    layers = layers_by_path(response.json())
    assert layers["fc"]["shape"] == [10] and all(len(entry["shape"]) >= 1 for entry in layers.values())


def test_a_large_architecture_is_listed_without_building_it(client: TestClient) -> None:
    """~144M parameters (580 MB of float32) listed on the meta device: nothing is allocated."""
    kwargs = json.dumps({"hidden": [8_000, 8_000]})
    response = client.get("/v1/architectures/mlp/layers", params={"input_shape": "1,100,100", "kwargs": kwargs})
    assert response.status_code == 200, response.text
    assert layers_by_path(response.json())["blocks.1.0"]["shape"] == [8_000]


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({}, "input_shape", None),
        ({"input_shape": "a,b"}, "input_shape", None),
        ({"input_shape": "0,8,8"}, "input_shape", None),
        ({"input_shape": "1,2,3,4,5"}, "input_shape", None),
        ({"input_shape": "1,5000,8"}, "input_shape", None),
        ({"input_shape": "4,4096,4096"}, "input_shape", None),  # 67M values per example: over the cap
        ({"input_shape": "8"}, "input_shape", "invalid_kwargs"),  # a conv net needs (C, H, W)
        ({"input_shape": "1,8,8", "num_classes": 1}, "num_classes", None),
        ({"input_shape": "1,8,8", "kwargs": "{not json"}, "kwargs", None),
        ({"input_shape": "1,8,8", "kwargs": "[16, 32]"}, "kwargs", None),
        ({"input_shape": "1,8,8", "kwargs": '{"chanels": [4]}'}, "kwargs", "invalid_kwargs"),
        ({"input_shape": "1,8,8", "kwargs": '{"channels": [65536, 65536]}'}, "kwargs", "model_too_large"),
    ],
)
def test_architecture_layers_refuse_bad_queries_naming_the_param(
    client: TestClient, params: dict[str, Any], param: str, code: str | None
) -> None:
    assert_error(client.get("/v1/architectures/cnn/layers", params=params), 422, param, code)


def test_unknown_architecture_is_404(client: TestClient) -> None:
    error = assert_error(
        client.get("/v1/architectures/transformer/layers", params={"input_shape": "1,8,8"}),
        404,
        "name",
        "unknown_architecture",
    )
    assert "cnn" in error["message"]  # lists the known ones


# --- uploaded files, through the probe ----------------------------------------------------------------------


def test_safetensors_teacher_layers_with_its_architecture(client: TestClient) -> None:
    # The input shape a safetensors file records in its metadata is the default.
    file = upload_ok(client, "teacher", cnn_safetensors(input_shape="1,8,8"), "teacher.safetensors")
    assert file["meta"] == {"input_shape": [1, 8, 8]}
    params = {"architecture": "cnn", "kwargs": json.dumps(CNN["kwargs"])}
    response = client.get(f"/v1/files/{file['id']}/layers", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    layers = layers_by_path(body)
    assert body["input_shape"] == [1, 8, 8] and body["note"] is None
    assert layers["features.block2"]["shape"] == [8, 2, 2] and layers["embedding"]["shape"] == [16]
    assert layers["fc"] == {"path": "fc", "shape": [NUM_CLASSES], "type": "Linear"}


def test_state_dict_torchscript_and_onnx_teachers(client: TestClient, torchscript_bytes: bytes) -> None:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(build_model(ArchitectureSpec(**CNN), input_shape=INPUT_SHAPE, num_classes=10).state_dict(), buffer)
    state_dict = upload_ok(client, "teacher", buffer.getvalue(), "teacher.pt")
    assert state_dict["format"] == "state_dict"
    params = {"architecture": "cnn", "kwargs": json.dumps(CNN["kwargs"]), "input_shape": "1,8,8"}
    response = client.get(f"/v1/files/{state_dict['id']}/layers", params=params)
    assert response.status_code == 200, response.text
    assert layers_by_path(response.json())["features.block1"]["shape"] == [4, 4, 4]

    # TorchScript: module paths without shapes, and a note saying why and what works.
    scripted = upload_ok(client, "teacher", torchscript_bytes, "teacher.ts")
    response = client.get(f"/v1/files/{scripted['id']}/layers", params={"input_shape": "1,8,8"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "fc" in layers_by_path(body) and all(entry["shape"] is None for entry in body["data"])
    assert "TorchScript" in body["note"]

    # ONNX: the graph's tensor names, with shapes.
    onnx_buffer = io.BytesIO()
    torch.onnx.export(tiny_teacher(), (torch.zeros(1, *INPUT_SHAPE),), onnx_buffer, dynamo=False)
    exported = upload_ok(client, "teacher", onnx_buffer.getvalue(), "teacher.onnx")
    response = client.get(f"/v1/files/{exported['id']}/layers", params={"input_shape": "1,8,8"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["note"] is None and {"Gemm", "Relu"} <= {entry["type"] for entry in body["data"]}
    assert [16] in [entry["shape"] for entry in body["data"]]  # the hidden layer of the mlp


def test_file_layers_refuse_what_cannot_be_listed(client: TestClient) -> None:
    file_id = upload_ok(client, "teacher", cnn_safetensors(), "teacher.safetensors")["id"]
    url = f"/v1/files/{file_id}/layers"
    # Answered before any probe runs.
    assert_error(client.get(url, params={"input_shape": "1,8,8"}), 422, "architecture", "missing_architecture")
    assert_error(client.get(url, params={"architecture": "cnn"}), 422, "input_shape")  # nothing recorded
    assert_error(client.get(url, params={"architecture": "cnn", "input_shape": "1,x"}), 422, "input_shape")
    assert_error(client.get(url, params={"input_shape": "1,8,8", "kwargs": "{}"}), 422, "architecture")
    assert_error(
        client.get(url, params={"input_shape": "1,8,8", "kwargs": '{"hidden": 3}'}), 422, "kwargs"
    )  # kwargs without an architecture
    assert_error(
        client.get(url, params={"input_shape": "1,8,8", "architecture": "cnnn"}),
        422,
        "architecture",
        "unknown_architecture",
    )
    # Answered by the probe: the weights are not those of this architecture.
    error = assert_error(
        client.get(url, params={"input_shape": "1,8,8", "architecture": "cnn", "kwargs": '{"channels": [4, 16]}'}),
        422,
        "kwargs",
        "architecture_mismatch",
    )
    assert "features.block2" in error["message"]
    dataset_id = upload_ok(client, "dataset", npz_bytes())["id"]
    assert_error(client.get(f"/v1/files/{dataset_id}/layers"), 422, "file_id", "wrong_file_purpose")
    assert_error(client.get("/v1/files/file_nope/layers"), 404, None, "not_found")


def test_another_tenants_file_is_404(client: TestClient, db_session: Session) -> None:
    file_id = upload_ok(client, "teacher", cnn_safetensors(), "teacher.safetensors")["id"]
    row = db_session.scalars(select(File).where(File.id == file_id)).one()
    row.tenant_id = "someone_else"
    db_session.commit()
    params = {"architecture": "cnn", "input_shape": "1,8,8"}
    assert_error(client.get(f"/v1/files/{file_id}/layers", params=params), 404, None, "not_found")


def test_a_probe_past_its_time_is_a_422(
    api_settings: Settings, session_factory: sessionmaker[Session], safetensors_bytes: bytes, api_key: str
) -> None:
    from app.main import create_app

    settings = api_settings.model_copy(update={"probe_timeout_seconds": 0.3})  # torch alone takes longer
    app = create_app(settings, session_factory=session_factory, queue=RecordingQueue())
    with TestClient(app, headers={"Authorization": f"Bearer {api_key}"}) as client:
        file_id = upload_ok(client, "teacher", safetensors_bytes, "teacher.safetensors")["id"]
        params = {"architecture": "mlp", "kwargs": '{"hidden": [16]}', "input_shape": "1,8,8"}
        error = assert_error(client.get(f"/v1/files/{file_id}/layers", params=params), 422, None, "probe_timeout")
    assert "0.3 s" in error["message"]


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot run on this host")
def test_the_sandbox_shows_the_probe_only_its_own_input(tmp_path: Path) -> None:
    """Two uploads in the hidden upload folder: the one the probe was not given is not there for it."""
    uploads = tmp_path / "files"
    uploads.mkdir()
    mine, other = uploads / "mine", uploads / "other"
    mine.write_bytes(cnn_safetensors())
    other.write_bytes(cnn_safetensors())
    limits = ProbeLimits(
        timeout_seconds=60,
        cpu_seconds=60,
        memory_bytes=4 << 30,
        output_bytes=1 << 20,
        sandbox="bwrap",
        hidden=(uploads,),
    )
    args = ["layers", "--architecture-json", json.dumps(CNN), "--input-shape", "1,8,8", "--json", "--checkpoint"]
    # (The endpoint tests above read their own upload through the same sandbox.)
    with pytest.raises(UserError) as refused:
        run_probe([*args, str(other)], limits=limits, inputs=[mine])
    assert refused.value.code == "file_not_found" and refused.value.param == "checkpoint"
