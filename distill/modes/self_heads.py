"""Self-distillation with auxiliary heads (Zhang et al. 2019, "Be Your Own Teacher", arXiv:1905.08094).

A small classifier is attached to each shallower stage of the student (every `feature_layers` entry but the
deepest, which feeds the student's own classifier). Each head learns from the labels and from the deepest
classifier's softened, detached outputs; the deepest learns from the labels. The heads shape the shared
stages and are thrown away: the exported student has none.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from distill.errors import UserError
from distill.losses import HardLabelLoss, Loss, SoftTargetLoss, WeightedSum
from distill.losses.outputs import Outputs
from distill.models import feature_layers
from distill.models.taps import Taps, layer_shapes
from distill.modes.context import JobContext, ModeResult
from distill.training.loop import Phase, steps_for


class OnHead(nn.Module):
    """Applies a loss to one head's logits (kept in `student.features[head]`) instead of the final logits."""

    def __init__(self, head: str, loss: nn.Module) -> None:
        super().__init__()
        self.head, self.loss = head, loss

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        return self.loss(Outputs(student.features[self.head]), teacher, target)  # type: ignore[no-any-return]


def make_head(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A 1×1 conv bottleneck, global pooling and a linear classifier for a (C, H, W) stage; linear for (D,)."""
    if len(shape) == 3:
        width = max(shape[0], 32)
        return nn.Sequential(
            nn.Conv2d(shape[0], width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
        )  # fmt: skip
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), num_classes))


def phases(config, n_train: int) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [("train", steps_for(n_train, config.training.epochs, batch_size=config.training.batch_size))]


def run(ctx: JobContext) -> ModeResult:
    ctx.require_labels("self-distillation")
    student = ctx.build_student()
    stages = feature_layers(student)
    layers = stages[:-1] or stages
    if not layers:
        raise UserError(
            "self method 'heads' needs a student with named stages (a registry architecture that lists feature_layers)",
            code="invalid_job",
            param="self.method",
        )
    shapes = layer_shapes(student, ctx.data.input_shape)
    heads = nn.ModuleDict({f"head{i}": make_head(shapes[p], ctx.num_classes) for i, p in enumerate(layers, start=1)})
    ctx.emit("message", level="info", message=f"auxiliary heads on {', '.join(layers)}")
    taps = Taps(student, layers)
    temperature, lambda_ = ctx.config.self_.temperature if ctx.config.self_ else 3.0, ctx.config.knowledge.lambda_
    terms: dict[str, tuple[float, Loss]] = {"hard": (lambda_, HardLabelLoss())}
    for name in heads:
        terms[f"{name}_soft"] = (1.0, OnHead(name, SoftTargetLoss(temperature)))
        terms[f"{name}_hard"] = (lambda_, OnHead(name, HardLabelLoss()))
    loss = WeightedSum(terms)

    def forward(idx: Tensor, x: Tensor) -> tuple[Outputs, Outputs]:
        out = taps(x)
        head_logits = {name: head(out.features[path]) for (name, head), path in zip(heads.items(), layers, strict=True)}
        return Outputs(out.logits, head_logits), Outputs(out.logits.detach())  # the deepest classifier teaches

    def evaluate() -> dict[str, float]:
        return ctx.evaluate(student, None)

    phase = Phase(
        "train", ctx.data.train.x, ctx.train_y, nn.ModuleDict({"student": student, "heads": heads, "loss": loss}),
        forward, loss, evaluate, ctx.checkpoint("train"), ctx.config.training.epochs,
    )  # fmt: skip
    ctx.train(phase)
    report = {"heads": _head_accuracy(ctx, taps, heads, layers)}
    taps.remove()
    return ModeResult(student=student, report=report, history=phase.history)


def _head_accuracy(ctx: JobContext, taps: Taps, heads: nn.ModuleDict, layers: list[str]) -> list[dict[str, object]]:
    """Validation top-1 of each auxiliary head (they are not exported; this shows what they learned)."""
    import torch

    from distill.evaluation.metrics import classification_report

    out = []
    with torch.inference_mode():
        taps.model.eval()
        heads.eval()
        x = ctx.val_x.to(ctx.device)
        feats = [taps(x[i : i + 1024]).features for i in range(0, len(x), 1024)]
        for (name, head), path in zip(heads.items(), layers, strict=True):
            logits = torch.cat([head(f[path]).float().cpu() for f in feats])
            entry: dict[str, object] = {"head": name, "layer": path}
            if ctx.val_y is not None:
                entry["top1"] = classification_report(logits, ctx.val_y)["top1"]
            out.append(entry)
    return out
