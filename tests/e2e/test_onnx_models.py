"""ONNX models from outside through the real stack (uvicorn + a Celery worker on Postgres and Redis):

- a student exported from a small torch model with torch.onnx.export, uploaded with purpose 'student' and
  distilled from the safetensors teacher on the digits: its downloaded student.onnx, run by onnxruntime,
  scores exactly the report's validation top-1, and the other student formats are there too;
- an ONNX teacher (an exported cnn) with a FitNets term naming one of its tensor names, taken from
  GET /v1/files/{id}/layers (no input_shape given: the upload recorded it).

Both jobs are submitted at once and the one worker runs them in turn (one or two epochs on 600 examples).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.client import FINISHED, submit, upload, wait_until
from tests.e2e.conftest import TEACHER_ARCH, Digits, Stack

pytestmark = pytest.mark.slow

TEACHER_CNN: dict[str, Any] = {"name": "cnn", "kwargs": {"channels": [8, 16], "hidden": 32}}
STUDENT_CNN: dict[str, Any] = {"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}}


def export_onnx(model: Any, path: Path) -> Path:
    """What a PyTorch user does: torch.onnx.export with a dynamic batch dim."""
    import torch

    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        input_names=["pixels"],
        output_names=["scores"],
        dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}},
        dynamo=False,
    )
    return path


def torch_student(folder: Path) -> Path:
    """A dense net written in plain torch (not from our registry), exported to ONNX."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return export_onnx(model, folder / "student.onnx")


def onnx_cnn_teacher(folder: Path) -> Path:
    import torch

    from distill.config import ArchitectureSpec
    from distill.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(ArchitectureSpec(**TEACHER_CNN), input_shape=(1, 8, 8), num_classes=10)
    return export_onnx(model, folder / "cnn_teacher.onnx")


def onnx_top1(graph: bytes, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    scores = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]  # (N, 10)
    return float((np.asarray(scores).argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def runs(pg_stack: Stack, digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("onnx")
    train = np.load(digits.train)
    small = folder / "train600.npz"
    np.savez(small, x=train["x"][:600], y=train["y"][:600])
    with httpx.Client(base_url=pg_stack.url, timeout=60, headers=pg_stack.headers) as http:
        student = upload(http, torch_student(folder), "student")
        onnx_teacher = upload(http, onnx_cnn_teacher(folder), "teacher")
        teacher_id = upload(http, digits.teacher, "teacher")["id"]
        dataset = {
            "train": upload(http, small, "dataset")["id"],
            "validation": upload(http, digits.validation, "dataset")["id"],
        }
        listing = http.get(f"/v1/files/{onnx_teacher['id']}/layers")
        assert listing.status_code == 200, listing.text
        training = {"batch_size": 64, "lr": 0.01, "seed": 0}
        jobs = {
            "onnx student": {
                "teacher": {"file_id": teacher_id, "architecture": TEACHER_ARCH},
                "student": {"file_id": student["id"], "init": "random"},
                "dataset": dataset,
                "knowledge": {"type": "response", "temperature": 4.0, "lambda": 0.5},
                "training": {**training, "epochs": 2},
            }
        }
        # The teacher's second conv stage, by the tensor name its exporter gave it.
        feature_maps = [e for e in listing.json()["data"] if len(e["shape"]) == 3 and e["shape"][0] == 16]
        tapped = feature_maps[-1]["path"]
        jobs["onnx teacher fitnet"] = {
            "teacher": {"file_id": onnx_teacher["id"]},
            "student": {"architecture": STUDENT_CNN},
            "dataset": dataset,
            "knowledge": {
                "lambda": 0.5,
                "terms": [
                    {"type": "response", "temperature": 4.0},
                    {
                        "type": "feature",
                        "method": "fitnet",
                        "hint_epochs": 1,
                        "layers": [{"teacher": tapped, "student": "features.block2"}],
                    },
                ],
            },
            "training": {**training, "epochs": 1},
        }
        ids = {name: submit(http, body)["id"] for name, body in jobs.items()}
        out: dict[str, Any] = {"student_file": student, "onnx_teacher": onnx_teacher, "listing": listing.json()}
        for name, job_id in ids.items():
            job = wait_until(http, job_id, FINISHED, timeout=120, logs=pg_stack.logs)
            artifacts = {a["name"]: a for a in http.get(f"/v1/jobs/{job_id}/artifacts").json()}
            downloads = {
                artifact: http.get(f"/v1/jobs/{job_id}/artifacts/{artifact}").content
                for artifact in ("student.onnx", "report.json")
                if artifact in artifacts
            }
            events = [
                e["message"] for e in http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
            ]
            out[name] = {"job": job, "artifacts": artifacts, "files": downloads, "events": events}
        out["tapped"] = tapped
        yield out


def test_an_uploaded_onnx_student_is_distilled_and_its_onnx_scores_what_the_report_says(
    runs: dict[str, Any], digits: Digits
) -> None:
    meta = runs["student_file"]["meta"]
    assert meta["input_name"] == "pixels" and meta["input_shape"] == [1, 8, 8] and meta["output_shape"] == [10]
    assert meta["unsupported_operators"] == [] and {"Gemm", "Relu"} <= set(meta["operators"])
    run = runs["onnx student"]
    assert run["job"]["status"] == "succeeded", (run["job"]["error"], run["events"][-5:])
    assert {"student.safetensors", "student.pt", "student.onnx", "report.json"} <= set(run["artifacts"])
    report = json.loads(run["files"]["report.json"])
    score = onnx_top1(run["files"]["student.onnx"], digits.val_x, digits.val_y)
    assert abs(score - report["student"]["top1"]) < 1e-6  # the report keeps float32
    assert score > 0.3  # two epochs on 600 examples from fresh weights: it learned (chance is 0.1)


def test_an_onnx_teacher_is_tapped_by_a_tensor_name_from_its_layers(runs: dict[str, Any]) -> None:
    assert runs["onnx_teacher"]["meta"]["input_shape"] == [1, 8, 8]
    assert runs["listing"]["input_shape"] == [1, 8, 8]
    run = runs["onnx teacher fitnet"]
    assert run["job"]["status"] == "succeeded", (run["job"]["error"], run["events"][-5:])
    assert run["job"]["spec"]["knowledge"]["terms"][1]["layers"][0]["teacher"] == runs["tapped"]
    assert any("hint stage" in message for message in run["events"])
    assert "student.onnx" in run["artifacts"]
