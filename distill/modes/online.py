"""Online distillation: deep mutual learning (Zhang, Xiang, Hospedales & Lu 2018, arXiv:1706.00384).

Two networks train together on one optimizer; each minimises its cross-entropy on the labels plus the
KL from the other's softened (detached) outputs, so each is the other's teacher. The "teacher" starts
from the uploaded checkpoint (`teacher.init = checkpoint`) or from random weights (`scratch`). Both are
exported and both are in the report.
"""

from __future__ import annotations

from torch import Tensor, nn

from distill.errors import UserError
from distill.losses import HardLabelLoss, Loss, SoftTargetLoss, WeightedSum
from distill.losses.outputs import Outputs
from distill.models import build_model
from distill.modes.context import JobContext, ModeResult, predict
from distill.teachers import Teacher
from distill.training.loop import Phase, steps_for


class MutualLoss(nn.Module):
    """loss(student, peer) + loss(peer, student): each term reads the other network's outputs as its target.

    SoftTargetLoss detaches its teacher argument, so the student's KL moves only the student and the peer's
    KL moves only the peer, exactly as in DML's alternating updates, but in one backward pass.
    """

    def __init__(self, student: WeightedSum, peer: WeightedSum) -> None:
        super().__init__()
        self.student_loss, self.peer_loss = student, peer

    def forward(self, student: Outputs, peer: Outputs | None, target: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        assert peer is not None
        s_total, s_parts = self.student_loss(student, peer, target)
        p_total, p_parts = self.peer_loss(peer, student, target)
        parts = {k: v for k, v in s_parts.items() if k != "loss"}
        parts.update({f"peer_{k}": v for k, v in p_parts.items() if k != "loss"})
        parts = {"loss": s_parts["loss"] + p_parts["loss"], **parts}
        return s_total + p_total, parts


def phases(config, n_train: int) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [("train", steps_for(n_train, config.training.epochs, batch_size=config.training.batch_size))]


def _mutual_terms(ctx: JobContext) -> WeightedSum:
    terms: dict[str, tuple[float, Loss]] = {}
    for i, term in enumerate(ctx.config.knowledge.response_terms()):
        terms["soft" if i == 0 else f"soft_{i + 1}"] = (term.weight, SoftTargetLoss(term.temperature))
    if ctx.train_y is not None:
        terms["hard"] = (ctx.config.knowledge.lambda_, HardLabelLoss())
    return WeightedSum(terms)


def check_trainable(teacher: Teacher) -> None:
    if teacher.module is None:
        raise UserError(
            f"mode 'online' trains the teacher too, and a {teacher.format} teacher cannot be trained here; upload it "
            "as TorchScript, a state_dict or safetensors with its architecture, or use mode 'offline'",
            code="untrainable_teacher",
            param="teacher",
        )


def trainable_teacher(ctx: JobContext, teacher: Teacher | None) -> nn.Module:
    """The peer network: the uploaded teacher made trainable again, or a fresh one of its architecture."""
    spec = ctx.config.teacher_spec()
    if teacher is None:  # init = scratch
        ctx.require_labels("an online teacher trained from scratch")
        assert spec.architecture is not None
        import torch

        torch.manual_seed(ctx.config.training.seed + 1)  # not the student's init: two equal nets teach nothing
        return build_model(
            spec.architecture, input_shape=ctx.data.input_shape, num_classes=ctx.num_classes,
            param="teacher.architecture", max_parameters=2_000_000_000,
        )  # fmt: skip
    check_trainable(teacher)
    assert teacher.module is not None
    module = teacher.module.float()
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def run(ctx: JobContext, teacher: Teacher | None, teacher_val: Tensor | None) -> ModeResult:
    peer = trainable_teacher(ctx, teacher)
    student = ctx.build_student()
    loss = MutualLoss(_mutual_terms(ctx), _mutual_terms(ctx))

    def forward(idx: Tensor, x: Tensor) -> tuple[Outputs, Outputs]:
        return Outputs(student(x)), Outputs(peer(x))  # both (B, C), both with gradients

    def evaluate() -> dict[str, float]:
        peer_val = predict(peer, ctx.val_x, device=ctx.device)
        peer_metrics = ctx.evaluate(peer, None)
        return {**ctx.evaluate(student, peer_val), **{f"teacher_{k}": v for k, v in peer_metrics.items()}}

    phase = Phase(
        "train", ctx.data.train.x, ctx.train_y, nn.ModuleDict({"student": student, "teacher": peer, "loss": loss}),
        forward, loss, evaluate, ctx.checkpoint("train"), ctx.config.training.epochs,
    )  # fmt: skip
    ctx.train(phase)
    info: dict[str, object] = {"init": ctx.config.teacher_spec().init, "trained": True}
    if teacher is not None:
        info["format"] = teacher.format
        info["bytes"] = teacher.bytes_on_disk
    if teacher_val is not None and ctx.val_y is not None:
        from distill.evaluation.metrics import classification_report

        info["before_training"] = classification_report(teacher_val, ctx.val_y)
    return ModeResult(
        student=student,
        teacher_net=peer,
        teacher_info=info,
        reference_val=predict(peer, ctx.val_x, device=ctx.device),
        history=phase.history,
    )
