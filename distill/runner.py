"""Run one distillation job end to end: data → teacher → student → train → (baseline) → export → report.

This is what `python -m distill run` and the worker's child process execute. Everything it needs is
passed in: the job config (with local paths), an output folder, a device, an event emitter, a stop flag.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.config import JobConfig
from distill.data import DataSplit, load_data
from distill.errors import Cancelled, UserError
from distill.evaluation.metrics import agreement, classification_report, mean_kl
from distill.events import Emitter, null_emitter
from distill.export import export_student
from distill.losses import build_response_loss, build_student_only_loss
from distill.models import build_model
from distill.report import build_report, write_plots
from distill.teachers import Teacher, load_teacher
from distill.training.device import resolve_device
from distill.training.loop import Phase, train
from distill.training.stop import StopFlag
from distill.training.teacher_signal import CachedLogits, LiveTeacher, should_cache, teacher_logits_for


def run_job(
    config: JobConfig,
    *,
    out_dir: Path,
    device: str | None = None,
    emit: Emitter = null_emitter,
    stop: StopFlag | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train, export and report; returns the report. Raises UserError, Cancelled, or (our bugs) anything else."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or StopFlag()
    torch_device = resolve_device(device or config.training.device)
    started = time.perf_counter()
    emit("message", level="info", message=f"device: {torch_device}")

    data = load_data(config.dataset, seed=config.training.seed)
    teacher = _load_teacher(config, data, device=str(torch_device))
    num_classes = data.num_classes or teacher.output_size(data.input_shape)
    val_x, val_y = data.validation.x, _labels_or_none(data.validation.y)

    # Evaluate the teacher first: a bad teacher explains a bad student, so the user sees it before training.
    teacher_val = teacher_logits_for(teacher, val_x)  # (N_val, C) on the CPU; batches go to the device one by one
    teacher_quality = classification_report(teacher_val, val_y)
    emit("message", level="info", message=f"teacher on validation: {_describe(teacher_quality)}")
    if stop.requested:
        raise Cancelled("stopped before training")

    train_y = _labels_or_none(data.train.y)
    knowledge = config.knowledge
    loss = build_response_loss(
        temperature=knowledge.temperature, lambda_=knowledge.lambda_, labeled=train_y is not None
    )
    cached = should_cache(
        cache_teacher=config.training.cache_teacher, augment=config.training.augment, mode=config.mode
    )
    if cached:
        t0 = time.perf_counter()
        signal: Any = CachedLogits(teacher_logits_for(teacher, data.train.x))
        emit("message", level="info", message=f"teacher logits cached in {time.perf_counter() - t0:.2f}s")
    else:
        signal = LiveTeacher(teacher)

    torch.manual_seed(config.training.seed)
    student = build_model(config.student.architecture, input_shape=data.input_shape, num_classes=num_classes)
    evaluate = make_evaluator(val_x, val_y, teacher_val, device=torch_device)
    phase = Phase(
        "train", data.train.x, train_y, loss, signal, evaluate, out_dir / "checkpoint.pt", config.training.epochs
    )
    train(student, phase, config.training, device=torch_device, emit=emit, stop=stop, resume=resume)
    history = list(phase.history)

    baseline = None
    if config.baseline:
        baseline_model, baseline_phase = _train_baseline(
            config, data, num_classes, evaluate, out_dir, device=torch_device, emit=emit, stop=stop, resume=resume
        )
        history += baseline_phase.history
        baseline = baseline_model

    emit("message", level="info", message="exporting the student (safetensors, TorchScript, ONNX)")
    student_cpu = student.to("cpu").eval()
    exported = export_student(student_cpu, out_dir, example_input=val_x[:8])
    cpu_teacher = teacher if torch_device.type == "cpu" else _load_teacher(config, data, device="cpu")
    report = build_report(
        config=config,
        data=data,
        num_classes=num_classes,
        teacher=cpu_teacher,
        teacher_val=teacher_val.cpu(),
        student=student_cpu,
        baseline=None if baseline is None else baseline.to("cpu").eval(),
        student_file=exported["student.safetensors"],
        cached_teacher=cached,
        device=str(torch_device),
        seconds=time.perf_counter() - started,
    )
    _write_outputs(out_dir, config, data, num_classes, report, history)
    write_plots(out_dir, report, history)
    artifacts = _artifact_list(out_dir)
    emit("result", report=report, artifacts=artifacts)
    return report


def _load_teacher(config: JobConfig, data: DataSplit, *, device: str) -> Teacher:
    if config.teacher.path is None:
        raise UserError("the engine needs teacher.path (a local file)", param="teacher.path")
    return load_teacher(
        config.teacher.path,
        format=config.teacher.format,
        architecture=config.teacher.architecture,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        device=device,
    )


def _labels_or_none(y: Tensor | None) -> Tensor | None:
    """None when no example is labeled, so losses and metrics take the unlabeled path."""
    return None if y is None or not bool((y >= 0).any()) else y


def _describe(quality: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in quality.items() if isinstance(v, float)) or "no labels"


def make_evaluator(x: Tensor, y: Tensor | None, teacher_logits: Tensor, *, device: torch.device) -> Any:
    """Validation metrics after each epoch: accuracy when labeled, and agreement/KL with the teacher always."""

    @torch.inference_mode()
    def evaluate(model: nn.Module) -> dict[str, float]:
        logits = predict(model, x, device=device)  # (N_val, C)
        out = {"agreement": agreement(teacher_logits.cpu(), logits), "kl": mean_kl(teacher_logits.cpu(), logits)}
        if y is not None:
            out["top1"] = classification_report(logits, y)["top1"]
        return out

    return evaluate


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, *, device: torch.device, batch_size: int = 1024) -> Tensor:
    """Logits (N, C) on the CPU, float32, at T = 1."""
    model.eval()
    chunks = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(chunks)


def _train_baseline(
    config: JobConfig,
    data: DataSplit,
    num_classes: int,
    evaluate: Any,
    out_dir: Path,
    *,
    device: torch.device,
    emit: Emitter,
    stop: StopFlag,
    resume: bool,
) -> tuple[nn.Module, Phase]:
    """The same student, same init, trained on the labeled examples alone with the same number of steps."""
    y = data.train.y
    if y is None or not bool((y >= 0).any()):
        raise UserError("baseline needs labels in the transfer set (dataset.train has none)", param="baseline")
    labeled = torch.nonzero(y >= 0).flatten()
    steps = math.ceil(len(data.train.x) / config.training.batch_size) * config.training.epochs
    epochs = max(1, round(steps / math.ceil(len(labeled) / config.training.batch_size)))
    emit("message", level="info", message=f"baseline: {len(labeled)} labeled examples, {epochs} epochs")
    torch.manual_seed(config.training.seed)
    model = build_model(config.student.architecture, input_shape=data.input_shape, num_classes=num_classes)
    phase = Phase(
        "baseline",
        data.train.x[labeled],
        y[labeled],
        build_student_only_loss(),
        None,
        evaluate,
        out_dir / "checkpoint-baseline.pt",
        epochs,
    )
    train(model, phase, config.training, device=device, emit=emit, stop=stop, resume=resume)
    return model, phase


def _write_outputs(
    out_dir: Path,
    config: JobConfig,
    data: DataSplit,
    num_classes: int,
    report: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    arch = config.student.architecture
    kwargs = {"input_shape": list(data.input_shape), "num_classes": num_classes, **arch.kwargs}
    student_config = {
        "student": {"architecture": {"name": arch.name, "kwargs": kwargs}},
        "input_shape": list(data.input_shape),
        "num_classes": num_classes,
        "inference_temperature": 1.0,
        "job": config.model_dump(mode="json", by_alias=True),
    }
    (out_dir / "config.json").write_text(json.dumps(student_config, indent=2))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    with open(out_dir / "metrics.jsonl", "w") as f:
        for record in history:
            f.write(json.dumps(record) + "\n")


ARTIFACT_NAMES = (
    "student.safetensors",
    "student.pt",
    "student.onnx",
    "config.json",
    "report.json",
    "metrics.jsonl",
    "training_curves.png",
    "comparison.png",
)


def _artifact_list(out_dir: Path) -> list[dict[str, Any]]:
    out = []
    for name in ARTIFACT_NAMES:
        path = out_dir / name
        if path.exists():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out.append({"name": name, "path": str(path), "bytes": path.stat().st_size, "sha256": digest})
    return out
