"""`python -m distill` end to end, as a subprocess: events on stdout, exit codes, artifacts that load back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from distill.config import ArchitectureSpec
from distill.errors import EXIT_CANCELLED, EXIT_OK, EXIT_USER_ERROR
from distill.models import build_model
from tests.engine.digits_job import make_digits_files, write_job

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_digits_files(tmp_path_factory.mktemp("digits"))


def distill(*args: str | Path, timeout: float = 120) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "distill", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, events, proc.stderr


def test_run_end_to_end_and_every_export_loads_back(files: dict[str, Path], tmp_path: Path) -> None:
    job = write_job(tmp_path, files, baseline=True)
    code, events, stderr = distill("run", job, "--out", tmp_path / "out")
    assert code == EXIT_OK, stderr
    assert {e["type"] for e in events} >= {"message", "progress", "metrics", "checkpoint", "result"}
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report == events[-1]["report"]
    for key in ("teacher", "student", "baseline"):
        assert 0.0 <= report[key]["top1"] <= 1.0 and "top5" in report[key] and "ece" in report[key]
    assert report["compression_ratio"] > 1 and report["speedup"] is not None
    assert 0.0 <= report["student"]["agreement"] <= 1.0 and report["student"]["kl_teacher_student"] >= 0.0
    assert (out / "training_curves.png").stat().st_size > 1000 and (out / "metrics.jsonl").read_text()

    # Rebuild the student from config.json alone, load each export, and recompute the reported accuracy.
    config = json.loads((out / "config.json").read_text())
    val = np.load(files["val"])
    x, y = torch.from_numpy(val["x"]).float(), torch.from_numpy(val["y"]).long()
    arch = ArchitectureSpec(**config["student"]["architecture"])
    model = build_model(arch, input_shape=tuple(config["input_shape"]), num_classes=config["num_classes"])
    model.load_state_dict(load_file(str(out / "student.safetensors")))
    model.eval()
    with torch.no_grad():
        eager = model(x)
        scripted = torch.jit.load(str(out / "student.pt"))(x)
    session = onnxruntime.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    torch.testing.assert_close(scripted, eager, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_logits, eager, atol=1e-4, rtol=0)
    accuracy = (eager.argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(report["student"]["top1"], abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "code", "param"),
    [
        ({"student": {"architecture": {"name": "transformer9000"}}}, "unknown_architecture", "student.architecture"),
        ({"student": {"architecture": {"name": "mlp", "kwargs": {"widths": [3]}}}}, "invalid_kwargs", None),
        ({"knowledge": {"temperature": -1}}, "invalid_job", "knowledge.temperature"),
        ({"teacher": {"path": "missing.safetensors", "architecture": {"name": "mlp"}}}, None, None),
    ],
)
def test_user_errors_exit_2_with_an_error_event(
    files: dict[str, Path], tmp_path: Path, overrides: dict[str, Any], code: str | None, param: str | None
) -> None:
    job = write_job(tmp_path, files, **overrides)
    exit_code, events, _ = distill("run", job, "--out", tmp_path / "out")
    assert exit_code == EXIT_USER_ERROR
    error = events[-1]
    assert error["type"] == "error" and error["message"]
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param


def test_invalid_json_is_a_user_error(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text("{not json")
    exit_code, events, _ = distill("run", job, "--out", tmp_path / "out")
    assert exit_code == EXIT_USER_ERROR and "not valid JSON" in events[-1]["message"]


def test_sigterm_checkpoints_exits_cancelled_and_resume_finishes(files: dict[str, Path], tmp_path: Path) -> None:
    job = write_job(tmp_path, files, training={"epochs": 400})
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill", "run", str(job), "--out", str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # wait until training is under way
        seen.append(json.loads(line))
        if seen[-1]["type"] == "checkpoint":
            break
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == EXIT_CANCELLED
    assert time.monotonic() - started < 30
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "cancelled"
    # The stop lands after a step (a new mid-epoch checkpoint) or at an epoch's end (the one already seen).
    last = [e for e in seen + rest if e["type"] == "checkpoint"][-1]
    assert (out / "checkpoint.pt").exists() and last["epoch"] < 400

    # The same job, shortened so the test is quick, resumes from that checkpoint and completes.
    stopped_epoch = last["epoch"]
    job = write_job(tmp_path, files, training={"epochs": stopped_epoch + 1})
    code, events, stderr = distill("run", job, "--out", out, "--resume")
    assert code == EXIT_OK, stderr
    assert any("resumed at epoch" in e.get("message", "") for e in events)


def test_archs_lists_students_with_parameters() -> None:
    code = subprocess.run(
        [sys.executable, "-m", "distill", "archs"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert code.returncode == 0
    for name in ("mlp", "cnn", "resnet8", "resnet32", "resnet8x4", "resnet32x4"):
        assert f"\n{name} " in "\n" + code.stdout
    assert "hidden=" in code.stdout


def test_run_help_explains_every_field() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "distill", "run", "--help"], capture_output=True, text=True, env=ENV, timeout=60
    )
    for field in ("teacher.path", "knowledge.temperature", "knowledge.lambda", "training.seed", "baseline"):
        assert field in proc.stdout
