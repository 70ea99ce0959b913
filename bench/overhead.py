"""What does distillation cost over training the student alone?

Each variant trains the same student on the same data, epochs, batch size and threads; the variants run
interleaved and repeated so that machine noise hits all of them alike, and ratios are taken within one run:
  plain        a minimal hand-written PyTorch loop: shuffle, forward, cross-entropy, backward, step.
  cached       the engine's loop, offline KD on teacher logits extracted beforehand (the loss, scheduler,
               checkpoint every epoch, one validation at the end).
  extraction   the one-time teacher pass that fills that cache (reported on its own and added for totals).
  cached+val   as cached, validating every epoch (what a job does by default; the curves cost this much).
  live         the engine's loop with the teacher run on every batch (augmentation or online modes).
The teacher has ~100× the student's parameters.

    python -m bench.overhead [--repeats 5] [--threads 1] [--epochs 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import split_dataset, train_teacher, write_result
from distill.config import ArchitectureSpec, TrainingSpec
from distill.evaluation.metrics import agreement, classification_report, mean_kl
from distill.losses import Outputs, build_response_loss
from distill.models import build_model, count_parameters
from distill.teachers import load_teacher
from distill.training.job_progress import JobProgress
from distill.training.loop import Phase, steps_for, train
from distill.training.stop import StopFlag
from distill.training.teacher_signal import CachedOutputs, LiveTeacher, teacher_logits_for


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(classification_report(logits, y)["top1"])


STUDENTS_TO_TRY = {
    "mlp64": ArchitectureSpec(name="mlp", kwargs={"hidden": [64]}),  # tiny: per-step overhead shows most
    "cnn": ArchitectureSpec(name="cnn", kwargs={}),  # the default small conv net
}
STUDENT = STUDENTS_TO_TRY["mlp64"]
TEACHER_HIDDEN = [2048, 2048]
EPOCHS, BATCH, LR = 10, 64, 1e-3


def plain_loop(x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model(STUDENT, input_shape=tuple(x.shape[1:]), num_classes=num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    start = time.perf_counter()
    model.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x)).split(BATCH):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def engine_loop(
    data: dict[str, torch.Tensor], teacher, logits: torch.Tensor | None, num_classes: int, seed: int, *, eval_every: int
) -> float:
    """The engine's training phase; `logits` = pre-extracted teacher logits, or None to run the teacher live."""
    x, y, vx, vy = data["x"], data["y"], data["vx"], data["vy"]
    torch.manual_seed(seed)
    model = build_model(STUDENT, input_shape=tuple(x.shape[1:]), num_classes=num_classes)
    spec = TrainingSpec(epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=seed, schedule="cosine", eval_every=eval_every)
    teacher_val = teacher_logits_for(teacher, vx)
    signal = CachedOutputs(Outputs(logits)) if logits is not None else LiveTeacher(teacher)

    def forward(idx: torch.Tensor, xb: torch.Tensor) -> tuple[Outputs, Outputs]:
        return Outputs(model(xb)), signal(idx, xb)

    @torch.inference_mode()
    def evaluate() -> dict[str, float]:  # what the engine's JobContext.evaluate computes
        model.eval()
        val = model(vx)
        return {"agreement": agreement(teacher_val, val), "kl": mean_kl(teacher_val, val), "top1": top1(val, vy)}

    loss = build_response_loss(temperature=4.0, lambda_=0.5, labeled=True)
    phase = Phase(
        "train", x, y, nn.ModuleDict({"student": model, "loss": loss}), forward, loss, evaluate,
        Path("/tmp/distillery-bench-overhead.pt"), EPOCHS,
    )  # fmt: skip
    emit = lambda *a, **k: None  # noqa: E731
    progress = JobProgress(emit, [("train", steps_for(len(x), EPOCHS, batch_size=BATCH))])
    start = time.perf_counter()
    train(phase, spec, device=torch.device("cpu"), emit=emit, stop=StopFlag(), progress=progress)
    return time.perf_counter() - start


def extraction(teacher, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    logits = teacher_logits_for(teacher, x)
    return time.perf_counter() - start, logits


def main() -> None:
    global EPOCHS, STUDENT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--student", default="mlp64", choices=sorted(STUDENTS_TO_TRY))
    args = parser.parse_args()
    EPOCHS, STUDENT = args.epochs, STUDENTS_TO_TRY[args.student]
    torch.set_num_threads(args.threads)

    paths = split_dataset("mnist")
    teacher_path, arch = train_teacher(paths["transfer"], hidden=TEACHER_HIDDEN, epochs=3)
    transfer, test = np.load(paths["transfer"]), np.load(paths["test"])
    data = {
        "x": torch.from_numpy(transfer["x"]).float(),
        "y": torch.from_numpy(transfer["y"]).long(),
        "vx": torch.from_numpy(test["x"]).float(),
        "vy": torch.from_numpy(test["y"]).long(),
    }
    num_classes = int(data["y"].max()) + 1
    input_shape = tuple(data["x"].shape[1:])
    teacher = load_teacher(
        str(teacher_path),
        format=None,
        architecture=ArchitectureSpec(**arch),
        input_shape=input_shape,
        num_classes=num_classes,
    )
    student_params = count_parameters(build_model(STUDENT, input_shape=input_shape, num_classes=num_classes))

    variants = ("plain", "cached", "extraction", "cached+val", "live")
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        seconds, logits = extraction(teacher, data["x"])
        times["extraction"].append(seconds)
        times["plain"].append(plain_loop(data["x"], data["y"], num_classes, r))
        times["cached"].append(engine_loop(data, teacher, logits, num_classes, r, eval_every=EPOCHS))
        times["cached+val"].append(engine_loop(data, teacher, logits, num_classes, r, eval_every=1))
        times["live"].append(engine_loop(data, teacher, None, num_classes, r, eval_every=EPOCHS))
        print({k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        "cached_over_plain": med["cached"] / med["plain"],
        "cached_with_extraction_over_plain": (med["cached"] + med["extraction"]) / med["plain"],
        "cached_with_validation_over_plain": med["cached+val"] / med["plain"],
        "live_over_plain": med["live"] / med["plain"],
        "caching_speedup": med["live"] / (med["cached"] + med["extraction"]),
    }
    result = {
        "setup": {
            "data": f"mnist transfer {tuple(data['x'].shape)}, validation {tuple(data['vx'].shape)}",
            "student": STUDENT.model_dump(),
            "student_params": student_params,
            "teacher": {"name": "mlp", "hidden": TEACHER_HIDDEN},
            "teacher_params": teacher.num_params,
            "teacher_to_student": round((teacher.num_params or 0) / student_params, 1),
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        "seconds_median": med,
        "seconds_all": times,
        **{k: round(v, 3) for k, v in ratios.items()},
    }
    write_result(f"overhead_{args.student}", result)
    print("\n".join(f"{k}: {v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
