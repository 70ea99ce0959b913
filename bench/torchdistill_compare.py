"""The same FitNets and AT jobs through Distillery and through torchdistill 1.1.5's own pipeline.

Same data (the MNIST 4,000 / 1,000 .npz split of bench/methods.py), same teacher weights (the safetensors
file bench/methods.py trains, handed to torchdistill as a `src_ckpt`), same student architecture, same
epochs / batch / optimizer (Adam) / lr / per-step cosine schedule, same layer pairs and term weights.
Each run is a fresh process timed from start to exit: `python -m distill run job.json --out DIR` here,
`python -m bench.torchdistill.train --config run.yaml` in torchdistill's virtual environment, which this
script creates on first use (pip install torch==2.14.1 torchvision==0.29.1 torchdistill==1.1.5, ≈5.5 GB;
default ~/.cache/distillery-bench/venv-torchdistill, outside the repo). Runs are interleaved seed by seed,
the order alternating (seed 0: Distillery first, seed 1: torchdistill first, ...), one thread each.

    python -m bench.torchdistill_compare                  # FitNets + AT, seeds 0 1 2 (~10 min)
    python -m bench.torchdistill_compare --methods at --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from bench import methods
from bench.common import RESULTS
from distill.config import ArchitectureSpec
from distill.models import build_model

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(__file__).parent / "torchdistill" / "configs"
OUT = Path(__file__).parent / "out" / "torchdistill"
DEFAULT_VENV = Path.home() / ".cache" / "distillery-bench" / "venv-torchdistill"
PINS = ["torch==2.14.1", "torchvision==0.29.1", "torchdistill==1.1.5"]
DATASET = "mnist"


def ensure_venv(venv: Path) -> Path:
    """torchdistill's own virtual environment: created and filled with the pinned versions if missing."""
    python = venv / "bin" / "python"
    check = "import torchdistill, torch; assert torchdistill.__version__ == '1.1.5', torchdistill.__version__"
    if python.exists() and subprocess.run([python, "-c", check], capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with {' '.join(PINS)} (about 5.5 GB, several minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    # sys.executable is our venv's python; a venv made from it is based on the same interpreter.
    subprocess.run([python, "-m", "pip", "install", *PINS], check=True)
    subprocess.run([python, "-c", check], check=True)
    return python


def env() -> dict[str, str]:
    """One thread for both frameworks (torch reads OMP_NUM_THREADS), and this repo importable."""
    out = dict(os.environ)
    out.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    return out


def layer_channels(teacher_state: dict[str, torch.Tensor], block: str) -> int:
    return int(teacher_state[f"{block}.0.weight"].shape[0])  # the block's conv: (C_out, C_in, 3, 3)


def setup() -> dict[str, Any]:
    spec = methods.SETUPS[DATASET]
    paths = methods.split(DATASET, spec["test_fraction"])
    teacher, _ = methods.train_teacher(DATASET, paths["train"], spec["teacher_epochs"])
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = OUT / (teacher.stem + ".pt")
    state = load_file(teacher)
    if not ckpt.exists():
        torch.save({"model": state}, ckpt)  # the same tensors, in the checkpoint form torchdistill's load_ckpt reads
    n_train = len(np.load(paths["train"])["y"])
    return {"paths": paths, "teacher": teacher, "teacher_ckpt": ckpt, "state": state, "n_train": n_train,
            "epochs": spec["epochs"]}  # fmt: skip


def distillery_job(method: str, ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    config = methods.job(method, "labeled", ctx["paths"], ctx["teacher"], ctx["epochs"], seed)
    return config.model_dump(mode="json", by_alias=True, exclude_none=True)


def torchdistill_config(
    method: str, ctx: dict[str, Any], workdir: Path, *, student_init: Path | None = None, order_seed: int | None = None
) -> Path:
    term = methods.FITNET if method == "fitnet" else methods.AT
    hint = "features.block2"  # FitNets: the middle stage of each network, as the engine pairs it automatically
    input_shape = list(np.load(ctx["paths"]["test"])["x"].shape[1:])
    values = {
        "train_npz": ctx["paths"]["train"],
        "test_npz": ctx["paths"]["test"],
        "teacher_ckpt": ctx["teacher_ckpt"],
        "student_ckpt": workdir / "student.pt",
        "input_shape": json.dumps(input_shape),
        "teacher_channels": json.dumps(methods.TEACHER["kwargs"]["channels"]),
        "teacher_hidden": methods.TEACHER["kwargs"]["hidden"],
        "student_channels": json.dumps(methods.STUDENT["kwargs"]["channels"]),
        "student_hidden": methods.STUDENT["kwargs"]["hidden"],
        "teacher_layer": hint,
        "student_layer": hint,
        "teacher_layer_channels": layer_channels(ctx["state"], hint),
        "student_layer_channels": methods.STUDENT["kwargs"]["channels"][1],
        "pair_weight": 1 / 3,  # AT: three stage pairs, averaged as the engine does
        "epochs": ctx["epochs"],
        "batch_size": methods.BATCH,
        "lr": methods.LR,
        "total_steps": ctx["epochs"] * math.ceil(ctx["n_train"] / methods.BATCH),
        "ce_weight": 1.0,
        "weight": term["weight"],
    }
    text = Template((CONFIGS / f"{method}.yaml").read_text()).substitute({k: str(v) for k, v in values.items()})
    if student_init is not None:  # equivalence check: Distillery's initial student weights
        old = "    src_ckpt:\n    dst_ckpt:"
        assert old in text
        text = text.replace(old, f"    src_ckpt: '{student_init}'\n    dst_ckpt:")
    if order_seed is not None:  # equivalence check: Distillery's shuffle order
        old = "key: 'torch.utils.data.RandomSampler'\n      kwargs:"
        assert text.count(old) == 1
        text = text.replace(
            old, f"key: 'bench.torchdistill.glue.DistilleryOrderSampler'\n      kwargs: {{seed: {order_seed}}}"
        )
    path = workdir / "run.yaml"
    path.write_text(text)
    return path


def timed_distill_run(job: dict[str, Any], environment: dict[str, str]) -> tuple[dict[str, Any], list[Any], float]:
    """`python -m distill run` of `job` in a fresh process: (report, metric records, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "job.json", Path(tmp) / "out"
        path.write_text(json.dumps(job))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "distill", "run", str(path), "--out", str(out), "--progress", "none"],
            cwd=ROOT, env=environment, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"distill run failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        report = json.loads((out / "report.json").read_text())
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return report, history, wall


def timed_torchdistill_run(
    python: Path, config: Path, seed: int, environment: dict[str, str]
) -> tuple[dict[str, Any], float]:
    """`python -m bench.torchdistill.train` with `config` in torchdistill's venv: (its result, wall seconds)."""
    result = config.parent / "result.json"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, "-m", "bench.torchdistill.train", "--config", str(config), "--seed", str(seed),
         "--result", str(result)],
        cwd=ROOT, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"torchdistill run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(result.read_text()), wall


def run_distillery(method: str, ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    report, history, wall = timed_distill_run(distillery_job(method, ctx, seed), env())
    return {
        "val_top1_per_epoch": [r["value"] for r in history if r["name"] == "val/top1"],
        "student_top1": report["student"]["top1"],
        "teacher_top1": report["teacher"]["top1"],
        "wall_s": round(wall, 2),
        "engine_seconds": report["training_seconds"],
        "pairing": report.get("pairing", []),
    }


def run_torchdistill(python: Path, method: str, ctx: dict[str, Any], seed: int, **same: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = torchdistill_config(method, ctx, Path(tmp), **same)
        out, wall = timed_torchdistill_run(python, config, seed, env())
        kept = OUT / f"{method}.yaml"
        if not kept.exists() and not same:
            shutil.copy(config, kept)  # one filled-in config kept (git-ignored) for whoever wants to read it
    return {**out, "wall_s": round(wall, 2)}


def equivalence(python: Path, ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    """AT (no learned adapter) with the same initial student and the same batch order in both pipelines:
    what is left to differ is the two implementations (and torch 2.13 vs 2.14 kernels), not the seed."""
    torch.manual_seed(seed)  # exactly what the engine does before building the student (modes/context.py)
    shape = tuple(np.load(ctx["paths"]["test"])["x"].shape[1:])
    student = build_model(ArchitectureSpec(**methods.STUDENT), input_shape=shape, num_classes=10)
    init = OUT / f"student-init-s{seed}.pt"
    torch.save({"model": student.state_dict()}, init)
    ours = run_distillery("at", ctx, seed)
    theirs = run_torchdistill(python, "at", ctx, seed, student_init=init, order_seed=seed)
    return {"seed": seed, "method": "at", "distillery": ours, "torchdistill": theirs}


def step_timing(python: Path) -> dict[str, Any]:
    script = Path(__file__).parent / "torchdistill" / "step_timing.py"
    proc = subprocess.run([python, str(script)], env=env(), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ms(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | teacher top-1 (%) | Distillery student top-1 (%) | torchdistill student top-1 (%) | "
        "difference (points) | Distillery wall (s) | torchdistill wall (s) | wall ratio (Distillery ÷ torchdistill) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        d = [r for r in rows if r["method"] == method and r["framework"] == "distillery"]
        t = [r for r in rows if r["method"] == method and r["framework"] == "torchdistill"]
        by_seed = {r["seed"]: r for r in t}
        diffs = [r["student_top1"] - by_seed[r["seed"]]["student_top1"] for r in d if r["seed"] in by_seed]
        ratios = [r["wall_s"] / by_seed[r["seed"]]["wall_s"] for r in d if r["seed"] in by_seed]
        label = "FitNets" if method == "fitnet" else "AT"
        lines.append(
            f"| {label} | {ms([r['teacher_top1'] for r in d])} | {ms([r['student_top1'] for r in d])} | "
            f"{ms([r['student_top1'] for r in t])} | {ms(diffs)} | {ms([r['wall_s'] for r in d], 1, 1)} | "
            f"{ms([r['wall_s'] for r in t], 1, 1)} | {ms(ratios, 1, 2)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["fitnet", "at"], choices=["fitnet", "at"])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--name", default=f"torchdistill_{DATASET}")
    parser.add_argument(
        "--equivalence", action="store_true", help="only the same-init, same-order AT check (writes <name>_same.json)"
    )
    args = parser.parse_args()
    python = ensure_venv(args.venv)
    ctx = setup()
    if args.equivalence:
        checks = [equivalence(python, ctx, seed) for seed in args.seeds]
        for c in checks:
            print(json.dumps(c))
        RESULTS.mkdir(parents=True, exist_ok=True)
        payload = {"machine": methods.machine(), "checks": checks}
        (RESULTS / f"{args.name}_same.json").write_text(json.dumps(payload, indent=2))
        return
    versions = subprocess.run(
        [python, "-c", "import torch, torchvision, torchdistill; print(torch.__version__, torchvision.__version__, "
         "torchdistill.__version__)"], capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    controls: dict[str, list[dict[str, Any]]] = {"distillery_venv": [], "torchdistill_venv": []}
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for i, seed in enumerate(args.seeds):
        controls["distillery_venv"].append(step_timing(Path(sys.executable)))
        controls["torchdistill_venv"].append(step_timing(python))
        for method in args.methods:
            order = ["distillery", "torchdistill"] if i % 2 == 0 else ["torchdistill", "distillery"]
            for framework in order:
                if framework == "distillery":
                    out = run_distillery(method, ctx, seed)
                else:
                    out = run_torchdistill(python, method, ctx, seed)
                rows.append({"method": method, "framework": framework, "seed": seed, **out})
                print(
                    f"seed {seed} {method:6s} {framework:12s} student {out['student_top1']:.4f} "
                    f"teacher {out['teacher_top1']:.4f} wall {out['wall_s']:.1f}s "
                    f"(total {time.perf_counter() - started:.0f}s)",
                    flush=True,
                )
    text = table(rows)
    teacher_values = {round(r["teacher_top1"], 6) for r in rows}
    payload = {
        "machine": methods.machine(),
        "versions": {
            "distillery_torch": torch.__version__,
            "torchdistill_torch": versions[0],
            "torchvision": versions[1],
            "torchdistill": versions[2],
        },
        "settings": {
            "dataset": DATASET,
            "train_examples": ctx["n_train"],
            "epochs": ctx["epochs"],
            "batch_size": methods.BATCH,
            "lr": methods.LR,
            "optimizer": "adam",
            "schedule": "cosine per step",
            "threads": 1,
            "teacher": methods.TEACHER,
            "student": methods.STUDENT,
            "terms": {"fitnet": methods.FITNET, "at": methods.AT},
            "ce_weight": 1.0,
            "seeds": args.seeds,
        },
        "same_teacher_accuracy_everywhere": len(teacher_values) == 1,
        "step_timing_controls": controls,
        "rows": rows,
        "table": text,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2))
    print(text)
    print(json.dumps(controls))


if __name__ == "__main__":
    main()
