"""Offline distillation: a frozen teacher, its outputs extracted once when they can be (DESIGN §1).

Phases: an optional FitNets hint stage (the hint terms only, Romero et al. 2015 §2.2), then the full loss.
Both train the student and the adapters of the feature terms together.
"""

from __future__ import annotations

import time

from torch import Tensor, nn

from distill.config import FeatureTerm, JobConfig, ResponseTerm
from distill.knowledge import build_knowledge
from distill.losses.outputs import Outputs
from distill.models.taps import Taps
from distill.modes.context import JobContext, ModeResult, load_job_teacher, network_layers, teacher_layers
from distill.teachers import Teacher
from distill.training.loop import Phase, steps_for
from distill.training.teacher_signal import (
    CachedOutputs,
    LiveTeacher,
    TeacherSignal,
    feature_cache_bytes,
    should_cache,
    teacher_logits_for,
    teacher_outputs_for,
)


def hint_epochs(config: JobConfig) -> int:
    terms = config.knowledge.terms or []
    return max([t.hint_epochs for t in terms if isinstance(t, FeatureTerm) and t.method == "fitnet"], default=0)


def phases(config: JobConfig, n_train: int) -> list[tuple[str, int]]:
    bs, hint = config.training.batch_size, hint_epochs(config)
    return ([("hint", steps_for(n_train, hint, batch_size=bs))] if hint else []) + [
        ("train", steps_for(n_train, config.training.epochs, batch_size=bs))
    ]


def run(ctx: JobContext, teacher: Teacher, teacher_val: Tensor) -> ModeResult:
    student = ctx.build_student()
    y = ctx.train_y
    plan = build_knowledge(
        ctx.config.knowledge,
        teacher=teacher_layers(teacher, ctx.data.input_shape),
        student=network_layers(student, ctx.data.input_shape),
        labeled=y is not None,
        fully_labeled=y is not None and bool((y >= 0).all()),
    )
    for line in plan.pairing:
        ctx.emit("message", level="info", message=line)
    signal, cached = _teacher_signal(ctx, teacher, plan.teacher_paths)
    taps = Taps(student, plan.student_paths)

    def forward(idx: Tensor, x: Tensor) -> tuple[Outputs, Outputs]:
        return taps(x), signal(idx, x)

    def evaluate() -> dict[str, float]:
        return ctx.evaluate(student, teacher_val)

    x = ctx.data.train.x
    history = []
    if plan.hint_loss is not None:
        ctx.emit(
            "message",
            level="info",
            message=f"hint stage: {plan.hint_epochs} epochs of {', '.join(plan.hint_loss.weights)} alone",
        )
        hint = Phase(
            "hint", x, y, nn.ModuleDict({"student": student, "loss": plan.hint_loss}), forward, plan.hint_loss,
            evaluate, ctx.checkpoint("hint"), plan.hint_epochs,
        )  # fmt: skip
        ctx.train(hint)
        history += hint.history
    main = Phase(
        "train", x, y, nn.ModuleDict({"student": student, "loss": plan.loss}), forward, plan.loss, evaluate,
        ctx.checkpoint("train"), ctx.config.training.epochs,
    )  # fmt: skip
    ctx.train(main)
    taps.remove()  # the exported student carries no hooks
    return ModeResult(
        student=student,
        teacher=teacher,
        reference_val=teacher_val,
        teacher_cached=cached,
        history=history + main.history,
        report={"pairing": plan.pairing} if plan.pairing else {},
    )


def _teacher_signal(ctx: JobContext, teacher: Teacher, paths: list[str]) -> tuple[TeacherSignal, bool]:
    """Cache logits (and features within the budget) unless the inputs change per step; say which."""
    spec = ctx.config.training
    x = ctx.data.train.x
    if not should_cache(cache_teacher=spec.cache_teacher, augment=spec.augment, mode="offline"):
        why = (
            "augmentation changes the inputs every step" if spec.augment != "none" else "training.cache_teacher is off"
        )
        ctx.emit("message", level="info", message=f"teacher runs live: {why}")
        return LiveTeacher(teacher, paths), False
    if paths:
        shapes = {e["path"]: e["shape"] for e in teacher.layers(ctx.data.input_shape)}
        need = feature_cache_bytes(len(x), [shapes[p] for p in paths])
        budget = spec.feature_cache_mb * 2**20
        if need > budget:
            ctx.emit(
                "message",
                level="info",
                message=f"teacher runs live: its features at {', '.join(paths)} need {need / 2**20:.0f} MiB, over "
                f"the {spec.feature_cache_mb} MiB cache budget (training.feature_cache_mb)",
            )
            return LiveTeacher(teacher, paths), False
    t0 = time.perf_counter()
    with ctx.timings("teacher_pass"):
        temperatures = [t.temperature for t in ctx.config.knowledge.terms or [] if isinstance(t, ResponseTerm)]
        if paths:
            signal = CachedOutputs(teacher_outputs_for(teacher, x, paths), temperatures=temperatures)
            what = f"logits + features at {', '.join(paths)}"
        else:
            signal = CachedOutputs(Outputs(teacher_logits_for(teacher, x)), temperatures=temperatures)
            what = "logits"
    ctx.emit("message", level="info", message=f"teacher {what} cached in {time.perf_counter() - t0:.2f}s")
    return signal, True


def load_and_check_teacher(ctx: JobContext) -> tuple[Teacher, Tensor]:
    """Load the teacher and measure it on validation first: a bad teacher explains a bad student."""
    with ctx.timings("teacher_load"):
        teacher = load_job_teacher(ctx, device=str(ctx.device))
    with ctx.timings("teacher_pass"):
        teacher_val = teacher_logits_for(teacher, ctx.val_x)  # (N_val, C) on the CPU
    ctx.emit("message", level="info", message=f"teacher on validation: {ctx.describe(teacher_val)}")
    return teacher, teacher_val
