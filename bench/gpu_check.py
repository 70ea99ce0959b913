"""The engine on a GPU: samples/s and peak memory of a response and a feature job, next to the CPU.

Each job is a real engine run (`distill.runner.run_job`, in this process so that CUDA's peak-memory counter
can be read): RepDistiller's resnet32x4 teacher and resnet8x4 student on CIFAR-shaped data (3×32×32, 10
classes) generated here from a fixed seed — nothing downloaded; the teacher is untrained, which changes
nothing about speed. Variants, each on both jobs:
  cpu               float32 on the CPU (fewer examples; samples/s is what compares)
  cuda              the engine's default on a GPU: bf16 autocast
  cuda+cl           + channels_last weights (convolutions then run NHWC, what tensor cores prefer)
  cuda+cl+compile   + torch.compile of the networks' forward (`--compile`; response job only: feature terms
                    read layers through forward hooks, which a forward compiled before they exist never runs)
samples/s counts training examples per second over the training phase, from the engine's own progress
events (the first epoch is left out, so compilation and warm-up are not counted); peak memory is
torch.cuda.max_memory_allocated over the job.

    bash bench/gpu_check.sh [--compile] [--examples 20000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from safetensors.torch import save_file

from bench.common import RESULTS, machine
from distill.config import ArchitectureSpec, JobConfig
from distill.models import build_model
from distill.runner import run_job

TEACHER = {"name": "resnet32x4", "kwargs": {}}
STUDENT = {"name": "resnet8x4", "kwargs": {}}
JOBS: dict[str, dict[str, Any]] = {
    "response": {"type": "response", "temperature": 4.0, "lambda": 0.1},
    "feature": {
        "lambda": 1.0,
        "terms": [{"type": "response", "temperature": 4.0, "weight": 0.9}, {"type": "feature", "method": "fitnet"}],
    },
}


def cifar_shaped(folder: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path = folder / f"cifar_shaped_{n}.npz"
    np.savez(path, x=rng.standard_normal((n, 3, 32, 32), dtype=np.float32), y=rng.integers(0, 10, n))
    return path


def teacher_file(folder: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec(**TEACHER), input_shape=(3, 32, 32), num_classes=10)
    path = folder / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@contextmanager
def model_transform(channels_last: bool, compile_forward: bool) -> Iterator[None]:
    """Every network the engine builds gets channels_last weights and/or a compiled forward. The module
    itself is kept (the engine's taps, checkpoints and exports see the same module and state_dict keys)."""
    import distill.models as models
    import distill.modes.online as online
    import distill.students as students

    original: Callable[..., torch.nn.Module] = models.build_model

    def build(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = original(*args, **kwargs)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile_forward:
            model.forward = torch.compile(model.forward)  # type: ignore[method-assign]
        return model

    # Students are built in distill.students (and online peers in distill.modes.online); a weights-only
    # teacher imports build_model from distill.models when it loads.
    import distill.runner as runner

    export = runner.export_student

    def export_uncompiled(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        # The class's own forward and NCHW weights again: TorchScript cannot script a compiled forward, and
        # safetensors stores contiguous tensors.
        model.__dict__.pop("forward", None)
        return export(model.to(memory_format=torch.contiguous_format), *args, **kwargs)

    with (
        mock.patch.object(runner, "export_student", export_uncompiled),
        mock.patch.object(students, "build_model", build),
        mock.patch.object(online, "build_model", build),
        mock.patch.object(models, "build_model", build),
    ):
        yield


def run_variant(
    job: str, variant: str, *, data: Path, teacher: Path, epochs: int, batch_size: int, out: Path
) -> dict[str, Any]:
    device = "cpu" if variant.startswith("cpu") else "cuda"
    config = JobConfig.model_validate(
        {
            "teacher": {"path": str(teacher), "architecture": TEACHER},
            "student": {"architecture": STUDENT},
            "dataset": {"train": str(data), "validation": str(data)},
            "knowledge": JOBS[job],
            "training": {"epochs": epochs, "batch_size": batch_size, "lr": 0.05, "optimizer": "sgd", "seed": 0},
        }
    )
    progress: list[tuple[float, int, int]] = []  # (time, epoch, step)

    def emit(kind: str, **fields: Any) -> None:
        if kind == "progress" and fields.get("phase") == "train":
            progress.append((time.perf_counter(), int(fields["epoch"]), int(fields["step"])))

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with model_transform("cl" in variant, "compile" in variant):
        run_job(config, out_dir=out / f"{job}-{variant}", device=device, emit=emit)
    wall = time.perf_counter() - started
    later = [p for p in progress if p[1] >= 2] or progress  # leave the first epoch out
    steps = later[-1][2] - later[0][2]
    seconds = later[-1][0] - later[0][0]
    return {
        "job": job,
        "variant": variant,
        "samples_per_second": steps * batch_size / seconds if seconds > 0 else None,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=20_000, help="training examples on the GPU")
    parser.add_argument("--cpu-examples", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also the torch.compile variant")
    parser.add_argument("--name", default="gpu_check")
    parser.add_argument("--variants", nargs="+", help="instead of the default list (e.g. cpu+cl+compile to try it)")
    args = parser.parse_args()
    variants = ["cpu"]
    if torch.cuda.is_available():
        variants += ["cuda", "cuda+cl"] + (["cuda+cl+compile"] if args.compile else [])
    else:
        print("no CUDA device here: CPU figures only")
    variants = args.variants or variants
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teacher = teacher_file(folder)
        for job in JOBS:
            for variant in variants:
                if "compile" in variant and job != "response":
                    # Feature terms read layers through forward hooks that the engine registers after the
                    # networks are built; a forward compiled before that never runs them (checked here).
                    print(f"{job:9s} {variant:16s} skipped: taps need the uncompiled forward")
                    continue
                n = args.cpu_examples if variant.startswith("cpu") else args.examples
                row = run_variant(
                    job,
                    variant,
                    data=cifar_shaped(folder, n),
                    teacher=teacher,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    out=folder,
                )
                rows.append(row)
                memory = "-" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f} MiB"
                print(f"{job:9s} {variant:16s} {row['samples_per_second'] or 0:10.0f} samples/s  peak {memory}")
    info = {**machine(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
