"""Born-again networks (Furlanello et al. 2018, arXiv:1805.04770): generation k is taught by generation k-1.

Generation 1 is the student trained on the labels alone; each later generation is a freshly initialised
student of the same architecture distilled from the previous one (its outputs cached, as offline mode
does), with the job's response terms plus λ·CE. The last generation is the exported student; the report
lists every generation's accuracy. The last generation's phase is called `train`, so its curves are the
student's (`val/top1`), and earlier ones `generation1`, `generation2`, ...
"""

from __future__ import annotations

from torch import Tensor, nn

from distill.losses import HardLabelLoss, Loss, SoftTargetLoss, WeightedSum
from distill.losses.outputs import Outputs
from distill.modes.context import JobContext, ModeResult, predict
from distill.training.loop import Phase, steps_for
from distill.training.teacher_signal import CachedOutputs


def phase_names(generations: int) -> list[str]:
    return [f"generation{k}" for k in range(1, generations)] + ["train"]


def phases(config, n_train: int) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    steps = steps_for(n_train, config.training.epochs, batch_size=config.training.batch_size)
    return [(name, steps) for name in phase_names(config.self_.generations)]


def _loss(ctx: JobContext, *, taught: bool) -> WeightedSum:
    terms: dict[str, tuple[float, Loss]] = {}
    if taught:
        for i, term in enumerate(ctx.config.knowledge.response_terms()):
            terms["soft" if i == 0 else f"soft_{i + 1}"] = (term.weight, SoftTargetLoss(term.temperature))
    terms["hard"] = (ctx.config.knowledge.lambda_ if taught else 1.0, HardLabelLoss())
    return WeightedSum(terms)


def run(ctx: JobContext) -> ModeResult:
    y = ctx.require_labels("born-again distillation")
    assert ctx.config.self_ is not None
    x = ctx.data.train.x
    previous: nn.Module | None = None
    previous_val: Tensor | None = None
    generations: list[dict[str, object]] = []
    history: list[dict[str, object]] = []
    for k, name in enumerate(phase_names(ctx.config.self_.generations), start=1):
        student = ctx.build_student(seed_offset=k - 1)  # a fresh init per generation
        loss = _loss(ctx, taught=previous is not None)
        signal = None if previous is None else CachedOutputs(Outputs(predict(previous, x, device=ctx.device)))
        reference = previous_val

        def forward(
            idx: Tensor, xb: Tensor, student: nn.Module = student, signal=signal
        ) -> tuple[Outputs, Outputs | None]:  # type: ignore[no-untyped-def]
            return Outputs(student(xb)), None if signal is None else signal(idx, xb)

        def evaluate(student: nn.Module = student, reference: Tensor | None = reference) -> dict[str, float]:
            return ctx.evaluate(student, reference)

        ctx.emit("message", level="info", message=f"born-again generation {k}" + (" (labels only)" if k == 1 else ""))
        phase = Phase(
            name, x, y, nn.ModuleDict({"student": student, "loss": loss}), forward, loss, evaluate,
            ctx.checkpoint(name), ctx.config.training.epochs,
        )  # fmt: skip
        ctx.train(phase)
        history += phase.history
        final = ctx.evaluate(student, reference)
        generations.append({"generation": k, **final})
        previous, previous_val = student, predict(student, ctx.val_x, device=ctx.device)
    assert previous is not None
    return ModeResult(student=previous, report={"generations": generations}, history=history)  # type: ignore[arg-type]
