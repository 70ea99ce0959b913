"""POST/GET/DELETE /v1/files: streaming upload, hashing, format detection, limits, pagination, tenancy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.files import repository as files_repository
from app.models import File
from app.settings import Settings
from tests.api.conftest import assert_error, npz_bytes, upload, upload_ok


def stored_files(upload_dir: Path) -> list[Path]:
    """Every file under the upload folder (uploads are stored per tenant: upload_dir/<tenant>/<file id>)."""
    return sorted(path for path in upload_dir.rglob("*") if path.is_file())


def test_upload_teacher_detects_format_and_hashes(
    client: TestClient, torchscript_bytes: bytes, storage: dict[str, Path], tenant: str
) -> None:
    body = upload_ok(client, "teacher", torchscript_bytes, "teacher.pt")
    assert body["purpose"] == "teacher"
    assert body["format"] == "torchscript"
    assert body["filename"] == "teacher.pt"
    assert body["bytes"] == len(torchscript_bytes)
    assert body["sha256"] == hashlib.sha256(torchscript_bytes).hexdigest()
    assert body["id"].startswith("file_")
    (stored,) = stored_files(storage["upload_dir"])
    assert stored.read_bytes() == torchscript_bytes
    assert stored.relative_to(storage["upload_dir"]).parts == (tenant, body["id"])
    assert client.get(f"/v1/files/{body['id']}").json() == body


def test_upload_safetensors_teacher(client: TestClient, safetensors_bytes: bytes) -> None:
    assert upload_ok(client, "teacher", safetensors_bytes, "t.safetensors")["format"] == "safetensors"


def test_upload_dataset_records_meta(client: TestClient) -> None:
    content = npz_bytes(30)
    body = upload_ok(client, "dataset", content, "../../etc/train.npz")
    assert body["format"] == "npz"
    assert body["filename"] == "train.npz"  # a label, never a path
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["meta"]["num_examples"] == 30
    assert body["meta"]["input_shape"] == [1, 8, 8]
    assert body["meta"]["num_classes"] == 10
    assert body["meta"]["labeled"] is True
    unlabeled = upload_ok(client, "dataset", npz_bytes(5, labeled=False))
    assert unlabeled["meta"]["labeled"] is False


def test_upload_too_large_declared_is_413(client: TestClient, api_settings: Settings, storage: dict[str, Path]) -> None:
    content = b"\0" * (api_settings.max_upload_bytes + 200_000)
    assert_error(upload(client, "teacher", content), 413, "file", "file_too_large")
    assert stored_files(storage["upload_dir"]) == []


def test_upload_too_large_is_stopped_while_streaming(
    client: TestClient, api_settings: Settings, storage: dict[str, Path]
) -> None:
    """Chunked body, no Content-Length: the limit is enforced on the bytes as they arrive."""
    boundary = "xyzboundary"

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nteacher\r\n'.encode()
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pt"\r\n\r\n'.encode()
        for _ in range(64):  # 4 MiB in 64 KiB chunks against a 1 MiB limit
            yield b"\1" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/files", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "file", "file_too_large")
    assert stored_files(storage["upload_dir"]) == []  # the partial file is gone
    assert api_settings.max_upload_bytes < 64 * 65536


def test_pickled_model_is_refused_with_how_to(
    client: TestClient, pickled_model_bytes: bytes, storage: dict[str, Path]
) -> None:
    error = assert_error(upload(client, "teacher", pickled_model_bytes, "model.pt"), 422, "file", "unsafe_checkpoint")
    assert "state_dict" in error["message"] and "torch.jit.script" in error["message"]
    assert stored_files(storage["upload_dir"]) == []


def test_broken_dataset_is_refused(client: TestClient, storage: dict[str, Path]) -> None:
    error = assert_error(upload(client, "dataset", b"not an archive"), 422, "file", "invalid_dataset")
    assert "npz" in error["message"]
    assert stored_files(storage["upload_dir"]) == []


def test_purpose_missing_or_invalid(client: TestClient, storage: dict[str, Path]) -> None:
    assert_error(upload(client, None, b"x"), 422, "purpose")
    assert_error(upload(client, "weights", b"x"), 422, "purpose")
    assert stored_files(storage["upload_dir"]) == []


def test_missing_file_part_and_wrong_content_type(client: TestClient) -> None:
    only_purpose = client.post("/v1/files", files={"purpose": (None, "teacher")})  # multipart, no file part
    assert_error(only_purpose, 422, "file", "missing_file")
    assert_error(client.post("/v1/files", json={"purpose": "teacher"}), 415, None, "unsupported_media_type")


def test_list_paginates_newest_first(client: TestClient) -> None:
    ids = [upload_ok(client, "dataset", npz_bytes(5, seed=i))["id"] for i in range(3)]
    first = client.get("/v1/files", params={"limit": 2}).json()
    assert [f["id"] for f in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    rest = client.get("/v1/files", params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False
    assert client.get("/v1/files", params={"purpose": "teacher"}).json() == {"data": [], "has_more": False}
    assert_error(client.get("/v1/files", params={"limit": 0}), 422, "limit")
    assert_error(client.get("/v1/files", params={"purpose": "model"}), 422, "purpose")


def test_delete_removes_row_and_bytes(client: TestClient, storage: dict[str, Path]) -> None:
    file_id = upload_ok(client, "dataset", npz_bytes(5))["id"]
    response = client.delete(f"/v1/files/{file_id}")
    assert response.status_code == 204 and response.content == b""
    assert_error(client.get(f"/v1/files/{file_id}"), 404, None, "not_found")
    assert stored_files(storage["upload_dir"]) == []
    assert_error(client.delete(f"/v1/files/{file_id}"), 404, None)


def test_delete_file_used_by_queued_job_is_409(client: TestClient, job_body: dict[str, Any]) -> None:
    assert client.post("/v1/jobs", json=job_body).status_code == 201
    error = assert_error(client.delete(f"/v1/files/{job_body['dataset']['train']}"), 409, None, "file_in_use")
    assert "job_" in error["message"]


def test_other_tenants_file_is_404(client: TestClient, db_session: Session) -> None:
    other = File(
        tenant_id="someone_else",
        purpose="dataset",
        filename="x.npz",
        bytes=1,
        sha256="0" * 64,
        format="npz",
        meta={},
        storage_path="x",
    )
    files_repository.add(db_session, other)
    db_session.commit()
    assert_error(client.get(f"/v1/files/{other.id}"), 404, None, "not_found")
    assert_error(client.delete(f"/v1/files/{other.id}"), 404, None, "not_found")
    assert client.get("/v1/files").json()["data"] == []
