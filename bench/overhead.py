"""What does distillation cost over training the student alone?

Three ways to train the same student on the same data, epochs, batch size and threads, interleaved and
repeated so that machine noise hits all of them alike; ratios are taken within one run:
  plain     a minimal hand-written PyTorch loop: shuffle, forward, cross-entropy, backward, step.
  cached    the engine's loop, offline KD with the teacher's logits computed once (the time to compute
            them is included) and per-epoch validation, as a real job does it.
  live      the same, with the teacher run on every batch (what augmentation or online modes need).
The teacher is ~100× the student's parameters.

    python bench/overhead.py [--repeats 3] [--threads 2]
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
from distill.losses import build_response_loss
from distill.models import build_model, count_parameters
from distill.runner import make_evaluator
from distill.teachers import load_teacher
from distill.training.loop import Phase, train
from distill.training.stop import StopFlag
from distill.training.teacher_signal import CachedLogits, LiveTeacher, teacher_logits_for

STUDENT = ArchitectureSpec(name="mlp", kwargs={"hidden": [64]})
TEACHER_HIDDEN = [2048, 2048]
EPOCHS, BATCH, LR = 5, 64, 1e-3


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


def engine_loop(data: dict[str, torch.Tensor], teacher, num_classes: int, seed: int, *, cached: bool) -> float:
    x, y, vx, vy = data["x"], data["y"], data["vx"], data["vy"]
    torch.manual_seed(seed)
    model = build_model(STUDENT, input_shape=tuple(x.shape[1:]), num_classes=num_classes)
    spec = TrainingSpec(epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=seed, schedule="constant")
    start = time.perf_counter()
    signal = CachedLogits(teacher_logits_for(teacher, x)) if cached else LiveTeacher(teacher)
    teacher_val = teacher_logits_for(teacher, vx)
    phase = Phase(
        "train",
        x,
        y,
        build_response_loss(temperature=4.0, lambda_=0.5, labeled=True),
        signal,
        make_evaluator(vx, vy, teacher_val, device=torch.device("cpu")),
        Path("/tmp/distillery-bench-overhead.pt"),
        EPOCHS,
    )
    train(model, phase, spec, device=torch.device("cpu"), emit=lambda *a, **k: None, stop=StopFlag())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
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

    times: dict[str, list[float]] = {"plain": [], "cached": [], "live": []}
    for r in range(args.repeats):
        times["plain"].append(plain_loop(data["x"], data["y"], num_classes, r))
        times["cached"].append(engine_loop(data, teacher, num_classes, r, cached=True))
        times["live"].append(engine_loop(data, teacher, num_classes, r, cached=False))
        print({k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "setup": {
            "data": f"mnist transfer {tuple(data['x'].shape)}, validation {tuple(data['vx'].shape)}",
            "student": STUDENT.model_dump(),
            "student_params": student_params,
            "teacher_params": teacher.num_params,
            "teacher_to_student": round((teacher.num_params or 0) / student_params, 1),
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        "seconds_median": med,
        "seconds_all": times,
        "cached_over_plain": round(med["cached"] / med["plain"], 3),
        "live_over_plain": round(med["live"] / med["plain"], 3),
        "caching_speedup": round(med["live"] / med["cached"], 2),
    }
    write_result("overhead", result)
    print(
        f"plain {med['plain']:.2f}s  cached {med['cached']:.2f}s  live {med['live']:.2f}s  "
        f"cached/plain {result['cached_over_plain']}  live/plain {result['live_over_plain']}  "
        f"caching speed-up {result['caching_speedup']}×"
    )


if __name__ == "__main__":
    main()
