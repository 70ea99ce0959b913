"""Every knowledge type and every mode through the real stack: uvicorn + a Celery worker on Postgres and Redis.

All jobs are submitted at once and the one worker runs them in turn (tiny conv nets, one or two epochs, a
600-example transfer set), so the module costs about one stack start plus the jobs' own time. For each
job: it succeeds, and the student.pt we download scores exactly the report's validation top-1; online
jobs also give back the trained teacher (teacher.* artifacts, whose teacher.pt matches the report's
teacher block), born-again reports its generations and heads mode its auxiliary heads.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.client import FINISHED, submit, upload, wait_until
from tests.e2e.conftest import Digits, Stack

pytestmark = pytest.mark.slow

TEACHER_CNN: dict[str, Any] = {"name": "cnn", "kwargs": {"channels": [8, 16], "hidden": 32}}
STUDENT_CNN: dict[str, Any] = {"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}}
BLOCKS = ["features.block1", "features.block2"]
RESPONSE: dict[str, Any] = {"type": "response", "temperature": 4.0, "lambda": 0.5}


def terms(*items: dict[str, Any]) -> dict[str, Any]:
    return {"lambda": 0.5, "terms": list(items)}


# name -> the fields that differ from an offline response job with the uploaded cnn teacher
JOBS: dict[str, dict[str, Any]] = {
    "response": {"knowledge": RESPONSE},
    "fitnet": {
        "knowledge": terms(
            {
                "type": "feature",
                "method": "fitnet",
                "hint_epochs": 1,
                "layers": [{"teacher": BLOCKS[1], "student": BLOCKS[1]}],
            }
        )
    },
    "attention": {"knowledge": terms({"type": "feature", "method": "attention"})},  # layers paired automatically
    "rkd": {"knowledge": terms({"type": "relation", "method": "rkd"})},
    "sp": {"knowledge": terms({"type": "relation", "method": "sp"})},
    "fsp": {
        "knowledge": terms({"type": "relation", "method": "fsp", "layers": [{"teacher": BLOCKS, "student": BLOCKS}]})
    },
    "response+fitnet": {
        "knowledge": terms({"type": "response", "temperature": 4.0}, {"type": "feature", "method": "fitnet"})
    },
    "online": {"mode": "online"},
    "online scratch": {"mode": "online", "teacher": {"init": "scratch", "architecture": TEACHER_CNN}},
    "self heads": {"mode": "self", "teacher": None, "self": {"method": "heads"}},
    "self born_again": {"mode": "self", "teacher": None, "self": {"method": "born_again", "generations": 2}},
}


@dataclass
class Finished:
    job: dict[str, Any]
    report: dict[str, Any]
    artifacts: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    series: set[str]  # names of the metric series (train/soft, train/fitnet, val/top1, ...)
    files: dict[str, bytes]  # downloaded: student.pt, and teacher.pt where there is one


def cnn_teacher(digits: Digits, folder: Path) -> Path:
    """A conv teacher trained here on the train split (full batch, a few seconds), saved as safetensors."""
    import torch
    from safetensors.torch import save_file

    from distill.config import ArchitectureSpec
    from distill.models import build_model

    train = np.load(digits.train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(ArchitectureSpec(**TEACHER_CNN), input_shape=(1, 8, 8), num_classes=10)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = torch.from_numpy(train["x"]), torch.from_numpy(train["y"])
        for _ in range(60):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    path = folder / "cnn_teacher.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def top1(torchscript: bytes, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model = torch.jit.load(io.BytesIO(torchscript)).eval()
    with torch.no_grad():
        predictions = model(torch.from_numpy(x)).argmax(dim=1).numpy()  # (N,)
    return float((predictions == y).mean())


@pytest.fixture(scope="module")
def finished(
    pg_stack: Stack, digits: Digits, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Finished]]:
    folder = tmp_path_factory.mktemp("knowledge")
    train = np.load(digits.train)
    small = folder / "train600.npz"
    np.savez(small, x=train["x"][:600], y=train["y"][:600])
    with httpx.Client(base_url=pg_stack.url, timeout=30, headers=pg_stack.headers) as http:
        teacher_id = upload(http, cnn_teacher(digits, folder), "teacher")["id"]
        train_id, validation_id = upload(http, small, "dataset")["id"], upload(http, digits.validation, "dataset")["id"]
        base = {
            "teacher": {"file_id": teacher_id, "architecture": TEACHER_CNN},
            "student": {"architecture": STUDENT_CNN},
            "dataset": {"train": train_id, "validation": validation_id},
            "knowledge": RESPONSE,
            "training": {"epochs": 1, "batch_size": 64, "lr": 0.01, "seed": 0},
        }
        ids = {}
        for name, change in JOBS.items():
            body = {**base, **change}
            if body["teacher"] is None:
                del body["teacher"]
            ids[name] = submit(http, body)["id"]
        out = {}
        for name, job_id in ids.items():  # one worker, in submission order: the last one finishes last
            job = wait_until(http, job_id, FINISHED, timeout=300, logs=pg_stack.logs)
            artifacts = {a["name"]: a for a in http.get(f"/v1/jobs/{job_id}/artifacts").json()}
            files = {
                artifact: http.get(f"/v1/jobs/{job_id}/artifacts/{artifact}").content
                for artifact in ("student.pt", "teacher.pt", "report.json")
                if artifact in artifacts
            }
            report = json.loads(files.pop("report.json", b"{}"))
            events = http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
            metrics = http.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 10_000}).json()["data"]
            out[name] = Finished(job, report, artifacts, events, {m["name"] for m in metrics}, files)
    yield out


@pytest.mark.parametrize("name", list(JOBS))
def test_the_job_succeeds_and_its_student_scores_what_the_report_says(
    finished: dict[str, Finished], digits: Digits, name: str
) -> None:
    run = finished[name]
    assert run.job["status"] == "succeeded", (run.job["error"], [e["message"] for e in run.events][-5:])
    assert run.job["progress"]["fraction"] == 1.0
    assert {"student.safetensors", "student.pt", "student.onnx", "report.json"} <= set(run.artifacts)
    assert len(run.files["student.pt"]) == run.artifacts["student.pt"]["bytes"]
    score = top1(run.files["student.pt"], digits.val_x, digits.val_y)
    assert abs(score - run.report["student"]["top1"]) < 1e-6
    assert run.job["metrics"]["student/top1"] == run.report["student"]["top1"]
    assert run.report["settings"]["mode"] == JOBS[name].get("mode", "offline")


def test_terms_train_under_their_own_names(finished: dict[str, Finished]) -> None:
    """Each term's loss is its own curve; fitnet's hint stage runs first."""
    for name in ("fitnet", "attention", "rkd", "sp", "fsp"):
        assert any(series.endswith(f"train/{name}") for series in finished[name].series), finished[name].series
    assert any("hint stage" in e["message"] for e in finished["fitnet"].events)
    assert {"train/soft", "train/fitnet"} <= finished["response+fitnet"].series


def test_layers_left_out_are_paired_automatically_and_reported(finished: dict[str, Finished]) -> None:
    for name in ("attention", "rkd", "sp", "response+fitnet"):
        pairing = finished[name].report.get("pairing")
        assert pairing and "paired automatically" in pairing[0], (name, pairing)
    assert not finished["fitnet"].report.get("pairing")  # its layers were given


@pytest.mark.parametrize("name", ["online", "online scratch"])
def test_online_mode_gives_back_the_teacher_too(finished: dict[str, Finished], digits: Digits, name: str) -> None:
    run = finished[name]
    assert {"teacher.safetensors", "teacher.pt", "teacher.onnx"} <= set(run.artifacts)
    assert run.report["teacher"] is not None
    assert abs(top1(run.files["teacher.pt"], digits.val_x, digits.val_y) - run.report["teacher"]["top1"]) < 1e-6


def test_self_modes_have_no_teacher_and_report_how_they_taught(finished: dict[str, Finished]) -> None:
    heads, born = finished["self heads"], finished["self born_again"]
    for run in (heads, born):
        assert run.report["teacher"] is None and "teacher.pt" not in run.artifacts
        assert run.job["spec"]["teacher"] is None
    assert heads.report.get("heads")
    assert [g["generation"] for g in born.report["generations"]] == [1, 2]


@pytest.mark.parametrize("name", ["self heads", "fitnet", "fsp"])
def test_the_exported_student_is_the_bare_student(finished: dict[str, Finished], name: str) -> None:
    """No auxiliary head or adapter is exported: the student has exactly the parameters of its architecture."""
    import torch

    from distill.config import ArchitectureSpec
    from distill.models import build_model, count_parameters

    bare = count_parameters(build_model(ArchitectureSpec(**STUDENT_CNN), input_shape=(1, 8, 8), num_classes=10))
    exported = torch.jit.load(io.BytesIO(finished[name].files["student.pt"]))
    assert sum(p.numel() for p in exported.parameters()) == bare == finished[name].report["student"]["params"]
