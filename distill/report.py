"""report.json: did distillation help, and what did it cost? Teacher vs student (vs the student alone)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.config import JobConfig
from distill.data import DataSplit
from distill.evaluation.latency import cpu_latency_ms
from distill.evaluation.metrics import agreement, classification_report, mean_kl
from distill.evaluation.plots import plot_comparison, plot_training_curves
from distill.models import count_parameters
from distill.teachers import Teacher


def build_report(
    *,
    config: JobConfig,
    data: DataSplit,
    num_classes: int,
    teacher: Teacher,
    teacher_val: Tensor,
    student: nn.Module,
    baseline: nn.Module | None,
    student_file: Path,
    cached_teacher: bool,
    device: str,
    seconds: float,
) -> dict[str, Any]:
    """Everything is measured on the validation set, on the CPU, at T = 1 (inference temperature)."""
    val_x = data.validation.x
    val_y = data.validation.y if data.validation.y is not None and bool((data.validation.y >= 0).any()) else None
    batch = val_x[: config.training.batch_size]  # one batch of the training batch size, for latency

    teacher_block: dict[str, Any] = {
        "format": teacher.format,
        **classification_report(teacher_val, val_y),
        "params": teacher.num_params,
        "bytes": teacher.bytes_on_disk,
        "latency_ms": cpu_latency_ms(teacher.logits, batch),
    }
    student_block = _model_block(student, val_x, val_y, teacher_val, batch)
    student_block["architecture"] = config.student.architecture.model_dump()
    student_block["bytes"] = os.path.getsize(student_file)

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
            "knowledge": config.knowledge.model_dump(by_alias=True),
            "mode": config.mode,
            "teacher_cached": cached_teacher,
            "device": device,
            "epochs": config.training.epochs,
            "seed": config.training.seed,
        },
        "teacher": teacher_block,
        "student": student_block,
        "baseline": None,
        "compression_ratio": _ratio(teacher.num_params, student_block["params"]),
        "size_ratio": _ratio(teacher.bytes_on_disk, student_block["bytes"]),
        "speedup": _ratio(teacher_block["latency_ms"]["median_ms"], student_block["latency_ms"]["median_ms"]),
        "training_seconds": round(seconds, 2),
    }
    if baseline is not None:
        report["baseline"] = _model_block(baseline, val_x, val_y, teacher_val, batch)
        if val_y is not None:
            report["distillation_gain_top1"] = student_block["top1"] - report["baseline"]["top1"]
    return report


def _model_block(model: nn.Module, x: Tensor, y: Tensor | None, teacher_val: Tensor, batch: Tensor) -> dict[str, Any]:
    with torch.inference_mode():
        logits = torch.cat([model(x[i : i + 1024]).float() for i in range(0, len(x), 1024)])  # (N_val, C)
    return {
        **classification_report(logits, y),
        "agreement": agreement(teacher_val, logits),
        "kl_teacher_student": mean_kl(teacher_val, logits),
        "params": count_parameters(model),
        "latency_ms": cpu_latency_ms(model, batch),
    }


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(float(a) / float(b), 3)


def write_plots(out_dir: Path, report: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Curves of loss and validation quality per epoch, and teacher / alone / distilled bars."""
    plot_training_curves(history, str(out_dir / "training_curves.png"))
    plot_comparison(report, str(out_dir / "comparison.png"))
