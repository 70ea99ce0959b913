"""What a user does over HTTP: upload, submit, poll, download; and the check that the student is real."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.e2e.conftest import TEACHER_ARCH, Digits

STUDENT_ARCH: dict[str, Any] = {"name": "mlp", "kwargs": {"hidden": [16]}}
FINISHED = ("succeeded", "failed", "cancelled")


def upload(http: httpx.Client, path: Path, purpose: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        response = http.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": purpose})
    assert response.status_code == 201, response.text
    return dict(response.json())


def job_body(
    teacher_id: str, train_id: str, validation_id: str, *, epochs: int, batch_size: int = 64
) -> dict[str, Any]:
    return {
        "teacher": {"file_id": teacher_id, "architecture": TEACHER_ARCH},
        "student": {"architecture": STUDENT_ARCH},
        "dataset": {"train": train_id, "validation": validation_id},
        "knowledge": {"type": "response", "temperature": 4.0, "lambda": 0.5},
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": 0.01, "seed": 0},
        "metadata": {"test": "e2e"},
    }


def upload_digits(http: httpx.Client, digits: Digits) -> tuple[str, str, str]:
    teacher = upload(http, digits.teacher, "teacher")
    assert teacher["format"] == "safetensors"
    train = upload(http, digits.train, "dataset")
    validation = upload(http, digits.validation, "dataset")
    return teacher["id"], train["id"], validation["id"]


def submit(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job = dict(response.json())
    assert job["status"] == "queued"
    return job


def wait_until(http: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float, logs: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            events = http.get(f"/v1/jobs/{job_id}/events").json()
            raise AssertionError(
                f"job {job_id} is {job['status']} after {timeout}s\n{json.dumps(events, indent=1)[-4000:]}\n"
                f"{logs() if logs else ''}"
            )
        time.sleep(0.25)


def student_top1(weights: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the downloaded student, rebuilt from its architecture, on (x, y)."""
    import torch
    from safetensors.torch import load

    from distill.config import ArchitectureSpec
    from distill.models import build_model

    model = build_model(ArchitectureSpec(**STUDENT_ARCH), input_shape=tuple(x.shape[1:]), num_classes=10)
    model.load_state_dict(load(weights), strict=True)
    model.eval()
    with torch.no_grad():
        predictions = model(torch.from_numpy(x)).argmax(dim=1).numpy()  # (N,)
    return float((predictions == y).mean())


def walk_through(http: httpx.Client, digits: Digits, *, logs: Any = None) -> dict[str, Any]:
    """Upload, submit a two-epoch job, wait for it, and check the student against the report."""
    teacher_id, train_id, validation_id = upload_digits(http, digits)
    job = submit(http, job_body(teacher_id, train_id, validation_id, epochs=2))
    job = wait_until(http, job["id"], FINISHED, timeout=180, logs=logs)
    assert job["status"] == "succeeded", (job, logs() if logs else "")
    assert job["progress"]["fraction"] == 1.0 and job["finished_at"] and job["started_at"]
    assert job["attempt"] == 1 and job["error"] is None

    names = {a["name"]: a for a in http.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert {"student.safetensors", "student.pt", "student.onnx", "config.json", "report.json"} <= set(names)
    weights = http.get(f"/v1/jobs/{job['id']}/artifacts/student.safetensors")
    assert weights.status_code == 200 and len(weights.content) == names["student.safetensors"]["bytes"]
    report = json.load(io.BytesIO(http.get(f"/v1/jobs/{job['id']}/artifacts/report.json").content))

    # The student we downloaded scores exactly what the report says, on the validation set we uploaded.
    top1 = student_top1(weights.content, digits.val_x, digits.val_y)
    assert report["data"]["validation_examples"] == len(digits.val_y)
    assert top1 == report["student"]["top1"] or abs(top1 - report["student"]["top1"]) < 1e-6
    assert job["metrics"]["student/top1"] == report["student"]["top1"]
    assert top1 > 0.5  # two epochs from a good teacher: far above chance (0.1)

    events = http.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    types = [e["type"] for e in events]
    assert types[types.index("started") :].count("started") == 1 and types[-1] == "succeeded"
    assert "progress" in types and "checkpoint" in types
    series = http.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    assert {m["epoch"] for m in series if m["name"] == "val/top1"} == {1, 2}
    return dict(job)
