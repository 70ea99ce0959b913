"""What every mode gets from the runner (`JobContext`) and hands back (`ModeResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.config import JobConfig
from distill.data import DataSplit
from distill.errors import UserError
from distill.evaluation.metrics import agreement, classification_report, mean_kl
from distill.events import Emitter
from distill.knowledge import NetworkLayers
from distill.models import embedding_layer, feature_layers
from distill.models.taps import TORCHSCRIPT_UNTAPPABLE, layer_shapes
from distill.students import build_student
from distill.teachers import Teacher, load_teacher
from distill.timings import StageTimer
from distill.training.job_progress import JobProgress
from distill.training.loop import Phase, train
from distill.training.stop import StopFlag


@dataclass
class JobContext:
    config: JobConfig
    data: DataSplit
    num_classes: int
    device: torch.device
    emit: Emitter
    stop: StopFlag
    progress: JobProgress
    out_dir: Path
    resume: bool = False
    timings: StageTimer = field(default_factory=StageTimer)

    @property
    def train_y(self) -> Tensor | None:
        return labels_or_none(self.data.train.y)

    @property
    def val_x(self) -> Tensor:
        return self.data.validation.x

    @property
    def val_y(self) -> Tensor | None:
        return labels_or_none(self.data.validation.y)

    def build_student(self, *, seed_offset: int = 0) -> nn.Module:
        """The student (registry or ONNX), its weights drawn from a generator seeded by the job (a CPU run repeats)."""
        torch.manual_seed(self.config.training.seed + seed_offset)
        return build_student(self.config.student, input_shape=self.data.input_shape, num_classes=self.num_classes)

    def train(self, phase: Phase) -> None:
        with self.timings("baseline" if phase.name == "baseline" else "train"):
            self._train(phase)

    def _train(self, phase: Phase) -> None:
        train(
            phase,
            self.config.training,
            device=self.device,
            emit=self.emit,
            stop=self.stop,
            progress=self.progress,
            resume=self.resume,
        )

    def checkpoint(self, phase: str) -> Path:
        return self.out_dir / ("checkpoint.pt" if phase == "train" else f"checkpoint-{phase}.pt")

    def require_labels(self, what: str) -> Tensor:
        y = self.train_y
        if y is None:
            raise UserError(f"{what} learns from the labels: dataset.train has none", param="dataset.train")
        return y

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, reference: Tensor | None) -> dict[str, float]:
        """Validation metrics: top-1 when labeled, agreement and KL with `reference` logits when given."""
        logits = predict(model, self.val_x, device=self.device)  # (N_val, C)
        out: dict[str, float] = {}
        if reference is not None:
            out["agreement"] = agreement(reference, logits)
            out["kl"] = mean_kl(reference, logits)
        if self.val_y is not None:
            out["top1"] = classification_report(logits, self.val_y)["top1"]
        return out

    def describe(self, logits: Tensor) -> str:
        quality = classification_report(logits, self.val_y)
        return ", ".join(f"{k} {v:.4f}" for k, v in quality.items() if isinstance(v, float)) or "no labels"


def load_job_teacher(ctx: JobContext, *, device: str) -> Teacher:
    spec = ctx.config.teacher_spec()
    if spec.path is None:
        raise UserError("the engine needs teacher.path (a local file)", param="teacher.path")
    return load_teacher(
        spec.path,
        format=spec.format,
        architecture=spec.architecture,
        input_shape=ctx.data.input_shape,
        num_classes=ctx.data.num_classes,
        device=device,
    )


def network_layers(model: nn.Module, input_shape: tuple[int, ...]) -> NetworkLayers:
    return NetworkLayers(layer_shapes(model, input_shape), feature_layers(model), embedding_layer(model))


def teacher_layers(teacher: Teacher, input_shape: tuple[int, ...]) -> NetworkLayers:
    if isinstance(teacher.module, torch.jit.ScriptModule):
        return NetworkLayers({}, [], None, unavailable=TORCHSCRIPT_UNTAPPABLE)
    shapes = {e["path"]: tuple(e["shape"]) for e in teacher.layers(input_shape)}
    if teacher.module is None:
        return NetworkLayers(shapes, [], None)
    return NetworkLayers(shapes, feature_layers(teacher.module), embedding_layer(teacher.module))


@dataclass
class ModeResult:
    student: nn.Module  # the bare student, exported as student.*
    teacher: Teacher | None = None  # the frozen teacher (offline), measured in the report
    teacher_net: nn.Module | None = None  # a teacher that trained too (online), exported as teacher.*
    teacher_info: dict[str, Any] = field(default_factory=dict)  # extra teacher facts for the report
    reference_val: Tensor | None = None  # teacher logits on validation: the report's agreement reference
    teacher_cached: bool = False
    report: dict[str, Any] = field(default_factory=dict)  # mode-specific report sections
    history: list[dict[str, Any]] = field(default_factory=list)


def labels_or_none(y: Tensor | None) -> Tensor | None:
    """None when no example is labeled, so losses and metrics take the unlabeled path."""
    return None if y is None or not bool((y >= 0).any()) else y


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, *, device: torch.device, batch_size: int = 1024) -> Tensor:
    """Logits (N, C) on the CPU, float32, at T = 1."""
    model.eval()
    chunks = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(chunks)
