"""The training loop: one function that reads top to bottom (nanoGPT habit).

What trains is a set of modules (`Phase.trainables`: the student, the adapters inside the loss, the
second network of online mode, the auxiliary heads of self mode): one optimizer over all of them, one
`.to(device)`, one checkpoint. The mode decides what a step's forward pass is (`Phase.forward`), so this
loop never branches on the mode (distill/modes/ is the one place that knows them).

Determinism and exact resume: the shuffle order of epoch e is a pure function of (seed, e), the
augmentation noise of step s a pure function of (seed, s), and the checkpoint carries every trainable
module, the optimizer, scheduler and the global RNG (dropout). So a run stopped after any step and resumed with
the same spec ends with the same weights as one that never stopped (on the CPU; CUDA kernels are not
bit-deterministic).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.config import TrainingSpec
from distill.errors import Cancelled, UserError
from distill.events import Emitter
from distill.losses.outputs import Outputs
from distill.training.augment import augment
from distill.training.checkpoint import load_checkpoint, save_checkpoint
from distill.training.device import autocast_for, conv_memory_format, in_format, set_memory_format
from distill.training.job_progress import JobProgress
from distill.training.optim import build_optimizer, build_scheduler
from distill.training.stop import StopFlag

# loss(student, teacher, target) -> (total, {"loss": total, term name: value}) — see losses.WeightedSum
LossFn = Callable[[Outputs, Outputs | None, Tensor | None], tuple[Tensor, dict[str, float]]]
# evaluate() -> {metric name: value}, run after every epoch on the validation set
EvalFn = Callable[[], dict[str, float]]
# forward(indices, x) -> (student outputs, teacher outputs or None) for one batch of the transfer set
ForwardFn = Callable[[Tensor, Tensor], tuple[Outputs, Outputs | None]]

PROGRESS_INTERVAL_S = 0.5


@dataclass
class Phase:
    """One training run of the job: a hint stage, the distillation itself, a generation, the baseline."""

    name: str  # "train", "hint", "baseline", "generation2", ...
    x: Tensor  # (N, ...) transfer inputs, CPU float32
    y: Tensor | None  # (N,) int64, -1 = unlabeled
    trainables: nn.ModuleDict  # everything the optimizer updates and the checkpoint holds
    forward: ForwardFn
    loss: LossFn
    evaluate: EvalFn
    checkpoint: Path
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)  # metric records, for metrics.jsonl


def steps_for(n: int, epochs: int, *, batch_size: int) -> int:
    """Optimizer steps of a phase over n examples: what JobProgress plans the whole job with."""
    return math.ceil(n / batch_size) * epochs


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def train(
    phase: Phase,
    spec: TrainingSpec,
    *,
    device: torch.device,
    emit: Emitter,
    stop: StopFlag,
    progress: JobProgress,
    resume: bool = False,
) -> None:
    """Train `phase.trainables` in place for `phase.epochs`; checkpoint every epoch and on stop."""
    n = len(phase.x)
    steps_per_epoch = math.ceil(n / spec.batch_size)
    model = phase.trainables
    model.to(device)
    memory_format = conv_memory_format(model, device)
    if memory_format is not torch.contiguous_format:  # else the layout the caller gave it stays
        set_memory_format(model, memory_format)
    optimizer = build_optimizer(model, spec)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    scheduler = build_scheduler(optimizer, spec, steps_per_epoch=steps_per_epoch, epochs=phase.epochs)
    autocast = autocast_for(device)

    start_epoch, start_step = 0, 0  # start_step: steps already done inside start_epoch
    if resume and phase.checkpoint.exists():
        state = load_checkpoint(phase.checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, start_step = int(state["epoch"]), int(state["step_in_epoch"])
        phase.history[:] = list(state.get("history", []))
        emit("message", level="info", message=f"{phase.name}: resumed at epoch {start_epoch + 1}, step {start_step}")

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "history": phase.history,
        }
        save_checkpoint(state, phase.checkpoint)
        emit("checkpoint", phase=phase.name, epoch=epoch, step=step_in_epoch, path=str(phase.checkpoint))

    progress.enter(phase.name, done=start_epoch * steps_per_epoch + start_step)
    last_progress = 0.0
    for epoch in range(start_epoch, phase.epochs):
        model.train()
        order = _epoch_order(n, spec.seed, epoch)
        running: dict[str, float] = {}
        seen = 0
        first = start_step if epoch == start_epoch else 0
        for step_in_epoch in range(first, steps_per_epoch):
            global_step = epoch * steps_per_epoch + step_in_epoch
            idx = order[step_in_epoch * spec.batch_size : (step_in_epoch + 1) * spec.batch_size]
            x = in_format(phase.x[idx].to(device, non_blocking=True), memory_format)  # (B, ...)
            y = None if phase.y is None else phase.y[idx].to(device, non_blocking=True)  # (B,)
            if spec.augment != "none":
                x = augment(x, spec.augment, torch.Generator().manual_seed(spec.seed * 7_919 + global_step))
            with autocast():
                student, teacher = phase.forward(idx, x)  # logits (B, C) and the tapped features of each
            loss, parts = phase.loss(student, teacher, y)
            if not math.isfinite(parts["loss"]):
                raise UserError(
                    f"{phase.name}: the loss became {parts['loss']} at epoch {epoch + 1}, step {step_in_epoch + 1}; "
                    "lower training.lr, set training.grad_clip, or check the data for extreme values",
                    code="diverged",
                    param="training.lr",
                )
            for param in params:  # optimizer.zero_grad(set_to_none=True) without its profiler wrapper
                param.grad = None
            loss.backward()
            if spec.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            optimizer.step()
            scheduler.step()

            for name, value in parts.items():
                running[name] = running.get(name, 0.0) + value * len(idx)
            seen += len(idx)
            if stop.requested:
                checkpoint(epoch, step_in_epoch + 1)
                raise Cancelled(f"{phase.name}: stopped at epoch {epoch + 1}, step {step_in_epoch + 1}")
            now = time.perf_counter()
            if now - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = now
                progress.report(
                    epoch=epoch + 1, epochs=phase.epochs, done=global_step + 1, step_in_epoch=step_in_epoch + 1
                )

        model.eval()
        values = {f"train/{k}": v / max(seen, 1) for k, v in running.items()}
        values["train/lr"] = scheduler.current_lr()
        if (epoch + 1) % spec.eval_every == 0 or epoch + 1 == phase.epochs:
            values.update({f"val/{k}": v for k, v in phase.evaluate().items()})
        if phase.name != "train":  # e.g. "baseline/val/top1", so its series never mix with the student's
            values = {f"{phase.name}/{k}": v for k, v in values.items()}
        step = (epoch + 1) * steps_per_epoch
        phase.history.extend({"name": k, "step": step, "epoch": epoch + 1, "value": v} for k, v in values.items())
        emit("metrics", phase=phase.name, step=step, epoch=epoch + 1, values=values)
        progress.report(epoch=epoch + 1, epochs=phase.epochs, done=step, step_in_epoch=steps_per_epoch)
        checkpoint(epoch + 1, 0)
        if stop.requested:
            raise Cancelled(f"{phase.name}: stopped after epoch {epoch + 1}")
    model.eval()
    if memory_format is not torch.contiguous_format:
        set_memory_format(model, torch.contiguous_format)  # what export, the report and the next phase expect
