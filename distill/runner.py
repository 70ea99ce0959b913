"""Run one distillation job end to end: data → teacher → student → train → (baseline) → export → report.

This is what `python -m distill run` and the worker's child process execute. Everything it needs is
passed in: the job config (with local paths), an output folder, a device, an event emitter, a stop flag.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.config import JobConfig
from distill.data import DataSplit, load_data
from distill.errors import Cancelled, UserError
from distill.events import Emitter, null_emitter
from distill.export import export_student, safetensors_size
from distill.losses import Outputs, build_student_only_loss
from distill.modes import JobContext, needs_file_teacher, plan_phases, run_mode
from distill.modes.context import labels_or_none, predict
from distill.painter import InlinePainter
from distill.report import build_report
from distill.teachers import Teacher, load_teacher
from distill.timings import StageTimer
from distill.training.device import resolve_device
from distill.training.job_progress import JobProgress
from distill.training.loop import Phase, steps_for
from distill.training.stop import StopFlag
from distill.training.teacher_signal import teacher_logits_for


def run_job(
    config: JobConfig,
    *,
    out_dir: Path,
    device: str | None = None,
    emit: Emitter = null_emitter,
    stop: StopFlag | None = None,
    resume: bool = False,
    painter: InlinePainter | None = None,
) -> dict[str, Any]:
    """Train, export and report; returns the report. Raises UserError, Cancelled, or (our bugs) anything else.
    `painter` draws the pictures (distill/evaluation/painter.py): in this process unless given another."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or StopFlag()
    torch_device = resolve_device(device or config.training.device)
    started = time.perf_counter()
    emit("message", level="info", message=f"device: {torch_device}")

    timings = StageTimer()
    with timings("data"):
        data = load_data(config.dataset, seed=config.training.seed)
    teacher, teacher_val = None, None
    if needs_file_teacher(config):
        with timings("teacher_load"):
            teacher = _load_teacher(config, data, device=str(torch_device))
        num_classes = data.num_classes or teacher.output_size(data.input_shape)
    elif data.num_classes is None:
        raise UserError(
            f"mode {config.mode!r} without a teacher file learns from labels: dataset.train has none",
            param="dataset.train",
        )
    else:
        num_classes = data.num_classes

    phases = plan_phases(config, len(data.train.x))
    if config.baseline:
        phases.append(("baseline", _baseline_steps(config, data)))
    ctx = JobContext(
        config,
        data,
        num_classes,
        torch_device,
        emit,
        stop,
        JobProgress(emit, phases),
        out_dir,
        resume=resume,
        timings=timings,
    )
    with _shape_errors_are_user_errors():
        if teacher is not None:
            # Evaluate the teacher first: a bad teacher explains a bad student, so the user sees it first.
            with timings("teacher_pass"):
                teacher_val = teacher_logits_for(teacher, data.validation.x)  # (N_val, C) on the CPU
            emit("message", level="info", message=f"teacher on validation: {ctx.describe(teacher_val)}")
        if stop.requested:
            raise Cancelled("stopped before training")

        result = run_mode(ctx, teacher, teacher_val)
    history = list(result.history)
    baseline = None
    if config.baseline:
        baseline, baseline_history = _train_baseline(ctx, result.reference_val)
        history += baseline_history

    student_cpu = result.student.to("cpu").eval()
    cpu_teacher = result.teacher
    if cpu_teacher is not None and torch_device.type != "cpu":
        cpu_teacher = _load_teacher(config, data, device="cpu")
    # The report first: it times the models, and nothing else may run while it does.
    report = build_report(
        config=config,
        data=data,
        num_classes=num_classes,
        result=result,
        teacher=cpu_teacher,
        student=student_cpu,
        baseline=None if baseline is None else baseline.to("cpu").eval(),
        student_bytes=safetensors_size(student_cpu),
        device=str(torch_device),
        seconds=time.perf_counter() - started,
    )
    painter = painter or InlinePainter()
    painter.figures(  # a forked painter draws while this process exports
        out_dir,
        history,
        teacher_logits=result.reference_val,
        student_logits=predict(student_cpu, data.validation.x, device=torch.device("cpu")),  # (N_val, C)
        labels=labels_or_none(data.validation.y),
    )
    painter.report(out_dir, report, history)
    emit("message", level="info", message="exporting the student (safetensors, TorchScript, ONNX)")
    with timings("export"):
        export_student(student_cpu, out_dir, example_input=data.validation.x[:8])
        if result.teacher_net is not None:
            emit("message", level="info", message="exporting the trained teacher too (online mode)")
            export_student(
                result.teacher_net.to("cpu").eval(), out_dir, example_input=data.validation.x[:8], prefix="teacher"
            )
    report["timings"] = timings.rounded()
    _write_outputs(out_dir, config, data, num_classes, report, history)
    painter.finish()
    artifacts = _artifact_list(out_dir)
    emit("result", report=report, artifacts=artifacts)
    return report


# torch's messages when tensors that must agree in shape do not. Submission checks shapes on one dry-run
# batch; a model whose outputs change with the data (a teacher that widens its logits on some inputs) is
# only found here, and is the user's model, not our bug.
_SHAPE_MESSAGES = (
    "Sizes of tensors must match",
    "size mismatch",
    "shapes cannot be multiplied",
    "must match the size of tensor",
    "is invalid for input of size",
)


@contextmanager
def _shape_errors_are_user_errors() -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if not any(phrase in text for phrase in _SHAPE_MESSAGES):
            raise
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise UserError(
            "the teacher's or student's outputs changed shape on the training data (every batch must give "
            f"the same output size as the dry run at submission): {first[:300]}",
            code="shape_mismatch",
            param="teacher",
        ) from exc


def _load_teacher(config: JobConfig, data: DataSplit, *, device: str) -> Teacher:
    spec = config.teacher_spec()
    if spec.path is None:
        raise UserError("the engine needs teacher.path (a local file)", param="teacher.path")
    return load_teacher(
        spec.path,
        format=spec.format,
        architecture=spec.architecture,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        device=device,
    )


def _baseline_labeled(data: DataSplit) -> Tensor:
    y = data.train.y
    if y is None or not bool((y >= 0).any()):
        raise UserError("baseline needs labels in the transfer set (dataset.train has none)", param="baseline")
    return torch.nonzero(y >= 0).flatten()


def _baseline_epochs(config: JobConfig, data: DataSplit) -> int:
    """As many optimizer steps as the distilled student's main phase, over the labeled examples only."""
    bs = config.training.batch_size
    steps = steps_for(len(data.train.x), config.training.epochs, batch_size=bs)
    return max(1, round(steps / math.ceil(len(_baseline_labeled(data)) / bs)))


def _baseline_steps(config: JobConfig, data: DataSplit) -> int:
    labeled = len(_baseline_labeled(data))
    return steps_for(labeled, _baseline_epochs(config, data), batch_size=config.training.batch_size)


def _train_baseline(ctx: JobContext, reference: Tensor | None) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The same student, same init, trained on the labeled examples alone with the same number of steps."""
    data, config = ctx.data, ctx.config
    labeled = _baseline_labeled(data)
    epochs = _baseline_epochs(config, data)
    assert data.train.y is not None
    ctx.emit("message", level="info", message=f"baseline: {len(labeled)} labeled examples, {epochs} epochs")
    model = ctx.build_student()
    loss = build_student_only_loss()

    def forward(idx: Tensor, x: Tensor) -> tuple[Outputs, None]:
        return Outputs(model(x)), None

    phase = Phase(
        "baseline", data.train.x[labeled], data.train.y[labeled], nn.ModuleDict({"student": model}), forward, loss,
        lambda: ctx.evaluate(model, reference), ctx.checkpoint("baseline"), epochs,
    )  # fmt: skip
    ctx.train(phase)
    return model, phase.history


def _write_outputs(
    out_dir: Path,
    config: JobConfig,
    data: DataSplit,
    num_classes: int,
    report: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    arch = config.student.architecture
    if arch is not None:
        kwargs = {"input_shape": list(data.input_shape), "num_classes": num_classes, **arch.kwargs}
        student: dict[str, Any] = {"architecture": {"name": arch.name, "kwargs": kwargs}}
    else:  # an ONNX student: student.onnx and student.pt are the architecture; safetensors holds its weights
        student = {"onnx": config.student.describe()}
    student_config = {
        "student": student,
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
    "teacher.safetensors",
    "teacher.pt",
    "teacher.onnx",
    "config.json",
    "report.json",
    "report.html",
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
