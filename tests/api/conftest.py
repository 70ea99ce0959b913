"""Fixtures for API tests: tiny teachers and datasets as bytes, and helpers that upload them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from distill.config import ArchitectureSpec
from distill.models import build_model

INPUT_SHAPE = (1, 8, 8)  # the shape of builtin:digits, so jobs may mix uploads and builtins
NUM_CLASSES = 10
TEACHER_ARCH: dict[str, Any] = {"name": "mlp", "kwargs": {"hidden": [16]}}


def tiny_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ArchitectureSpec(**TEACHER_ARCH), input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES).eval()


@pytest.fixture(scope="session")
def torchscript_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(tiny_teacher()), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tiny_teacher().state_dict().items()})


@pytest.fixture(scope="session")
def pickled_model_bytes() -> bytes:
    """A whole nn.Module pickled with torch.save: the upload the service must refuse."""
    buffer = io.BytesIO()
    torch.save(tiny_teacher(), buffer)
    return buffer.getvalue()


def npz_bytes(n: int = 40, *, labeled: bool = True, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {"x": rng.random((n, *INPUT_SHAPE), dtype=np.float32)}
    if labeled:
        arrays["y"] = np.arange(n) % NUM_CLASSES
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(client: TestClient, purpose: str | None, content: bytes, filename: str = "blob.bin") -> Any:
    data = {} if purpose is None else {"purpose": purpose}
    return client.post("/v1/files", data=data, files={"file": (filename, content, "application/octet-stream")})


def upload_ok(client: TestClient, purpose: str, content: bytes, filename: str = "blob.bin") -> dict[str, Any]:
    response = upload(client, purpose, content, filename)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def teacher_id(client: TestClient, torchscript_bytes: bytes) -> str:
    return str(upload_ok(client, "teacher", torchscript_bytes, "teacher.pt")["id"])


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    return str(upload_ok(client, "dataset", npz_bytes(), "train.npz")["id"])


@pytest.fixture
def job_body(teacher_id: str, dataset_id: str) -> dict[str, Any]:
    return {
        "teacher": {"file_id": teacher_id},
        "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
        "dataset": {"train": dataset_id},
        "knowledge": {"type": "response", "temperature": 4.0},
        "training": {"epochs": 1, "batch_size": 16},
    }


def assert_error(response: Any, status: int, param: str | None, code: str | None = None) -> dict[str, Any]:
    """The envelope and nothing else: {"error": {"code", "message", "param"}}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}, body
    assert body["error"]["param"] == param, body
    assert body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


def create_api_key(session_factory: Any, tenant: str) -> str:
    """A key for `tenant` (the tenant row too), committed into the test's transaction."""
    from app.auth.service import create_key

    with session_factory() as session:
        key = create_key(session, tenant=tenant).key
        session.commit()
    return key


@pytest.fixture
def api_key(session_factory: Any, tenant: str) -> str:
    """The key of the test's tenant: `client` sends it, so API tests run with auth required (the default
    outside the embedded SQLite mode), as production does."""
    return create_api_key(session_factory, tenant)


@pytest.fixture
def client(api: Any, api_key: str) -> Iterator[TestClient]:
    with TestClient(api, headers={"Authorization": f"Bearer {api_key}"}) as test_client:
        yield test_client


@pytest.fixture
def anonymous_client(api: Any) -> Iterator[TestClient]:
    """The same app, no key."""
    with TestClient(api) as test_client:
        yield test_client


@pytest.fixture
def api_settings(api_settings: Any) -> Any:
    """The root fixture's settings, with room for the many jobs some tests submit (the limit has its own test)."""
    return api_settings.model_copy(update={"max_concurrent_jobs": 100})
