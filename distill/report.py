"""report.json: did distillation help, and what did it cost? Teacher vs student (vs the student alone)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distill.config import JobConfig
from distill.data import DataSplit
from distill.evaluation.latency import cpu_latency_ms
from distill.evaluation.metrics import agreement, classification_report, mean_kl
from distill.models import count_parameters
from distill.modes.context import ModeResult
from distill.teachers import Teacher


def build_report(
    *,
    config: JobConfig,
    data: DataSplit,
    num_classes: int,
    result: ModeResult,
    teacher: Teacher | None,
    student: nn.Module,
    baseline: nn.Module | None,
    student_bytes: int,
    device: str,
    seconds: float,
) -> dict[str, Any]:
    """Everything is measured on the validation set, on the CPU, at T = 1 (inference temperature).

    The teacher block is the frozen teacher (offline), the teacher as trained alongside the student
    (online, with its accuracy before training), or null (self mode, which has no teacher).
    """
    val_x = data.validation.x
    val_y = data.validation.y if data.validation.y is not None and bool((data.validation.y >= 0).any()) else None
    batch = val_x[: config.training.batch_size]  # one batch of the training batch size, for latency
    reference = None if result.reference_val is None else result.reference_val.cpu()

    teacher_block: dict[str, Any] | None = None
    if teacher is not None and reference is not None:
        teacher_block = {
            "format": teacher.format,
            **classification_report(reference, val_y),
            "params": teacher.num_params,
            "bytes": teacher.bytes_on_disk,
            "latency_ms": cpu_latency_ms(teacher.logits, batch),
        }
    elif result.teacher_net is not None:
        net = result.teacher_net.to("cpu").eval()
        teacher_block = {**_model_block(net, val_x, val_y, None, batch), **result.teacher_info}
        teacher_block.pop("agreement", None)
        teacher_block.pop("kl_teacher_student", None)
    student_block = _model_block(student, val_x, val_y, reference, batch)
    student_block["architecture"] = config.student.describe()
    student_block["bytes"] = student_bytes

    t_params = None if teacher_block is None else teacher_block.get("params")
    t_bytes = None if teacher_block is None else teacher_block.get("bytes")
    t_latency = None if teacher_block is None else teacher_block["latency_ms"]["median_ms"]
    report: dict[str, Any] = {
        "data": {
            "input_shape": list(data.input_shape),
            "num_classes": num_classes,
            "train_examples": len(data.train.x),
            "train_labeled": data.train.num_labeled,
            "validation_examples": len(val_x),
            "validation_labeled": data.validation.num_labeled,
            "latency_batch_size": len(batch),
        },
        "settings": {
            "knowledge": config.knowledge.model_dump(by_alias=True, exclude_none=True),
            "mode": config.mode,
            "self": None if config.self_ is None else config.self_.model_dump(),
            "teacher_cached": result.teacher_cached,
            "device": device,
            "epochs": config.training.epochs,
            "seed": config.training.seed,
        },
        "teacher": teacher_block,
        "student": student_block,
        "baseline": None,
        "compression_ratio": _ratio(t_params, student_block["params"]),
        "size_ratio": _ratio(t_bytes, student_block["bytes"]),
        "speedup": _ratio(t_latency, student_block["latency_ms"]["median_ms"]),
        "training_seconds": round(seconds, 2),
        **result.report,
    }
    if baseline is not None:
        report["baseline"] = _model_block(baseline, val_x, val_y, reference, batch)
        if val_y is not None:
            report["distillation_gain_top1"] = student_block["top1"] - report["baseline"]["top1"]
    return report


def _model_block(
    model: nn.Module, x: Tensor, y: Tensor | None, teacher_val: Tensor | None, batch: Tensor
) -> dict[str, Any]:
    with torch.inference_mode():
        logits = torch.cat([model(x[i : i + 1024]).float() for i in range(0, len(x), 1024)])  # (N_val, C)
    return {
        **classification_report(logits, y),
        "agreement": None if teacher_val is None else agreement(teacher_val, logits),
        "kl_teacher_student": None if teacher_val is None else mean_kl(teacher_val, logits),
        "params": count_parameters(model),
        "latency_ms": cpu_latency_ms(model, batch),
    }


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(float(a) / float(b), 3)
