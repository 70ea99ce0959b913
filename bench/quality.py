"""Does distillation help? Teacher vs student alone vs distilled student on real digits, several seeds.

Settings:
  labeled     every transfer example has its label; distilled = T²·KL + λ·CE, alone = CE.
  few-labels  10% of the transfer set keeps its label; distilled = soft term on all + λ·CE on the 10%,
              alone = CE on the 10% (same number of optimizer steps, see distill/runner.py).
The sweep (--sweep) tries T × λ on MNIST to choose the defaults in distill/config.py.

    python bench/quality.py                 # defaults, digits + mnist, 3 seeds
    python bench/quality.py --sweep         # T × λ sweep (mnist, 2 seeds)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS, split_dataset, train_teacher, with_few_labels, write_result
from distill.config import DEFAULT_LAMBDA, DEFAULT_TEMPERATURE, JobConfig
from distill.runner import run_job

SETUPS = {
    # setup ("dataset" or "dataset-student"): (teacher hidden, teacher epochs, student architecture, student epochs)
    "digits": ([1200, 1200], 30, {"name": "mlp", "kwargs": {"hidden": [64]}}, 40),
    "mnist": ([1200, 1200], 20, {"name": "mlp", "kwargs": {"hidden": [128]}}, 20),
    "digits-cnn": ([1200, 1200], 30, {"name": "cnn", "kwargs": {}}, 30),
}


def one_run(
    dataset: str, setting: str, *, seed: int, temperature: float, lambda_: float, baseline: bool
) -> dict[str, Any]:
    hidden, teacher_epochs, student, epochs = SETUPS[dataset]
    paths = split_dataset(dataset.split("-")[0])
    teacher, arch = train_teacher(paths["transfer"], hidden=hidden, epochs=teacher_epochs)
    transfer = paths["transfer"] if setting == "labeled" else with_few_labels(paths["transfer"], 0.1)
    config = JobConfig.model_validate(
        {
            "teacher": {"path": str(teacher), "architecture": arch},
            "student": {"architecture": student},
            "dataset": {"train": str(transfer), "validation": str(paths["test"])},
            "knowledge": {"type": "response", "temperature": temperature, "lambda": lambda_},
            "training": {"epochs": epochs, "batch_size": 64, "lr": 3e-3, "seed": seed, "device": "cpu"},
            "baseline": baseline,
        }
    )
    with tempfile.TemporaryDirectory() as out:
        report = run_job(config, out_dir=Path(out))
    return {
        "dataset": dataset,
        "setting": setting,
        "seed": seed,
        "temperature": temperature,
        "lambda": lambda_,
        "teacher_top1": report["teacher"]["top1"],
        "distilled_top1": report["student"]["top1"],
        "alone_top1": report["baseline"]["top1"] if report["baseline"] else None,
        "agreement": report["student"]["agreement"],
        "test_examples": report["data"]["validation_examples"],
    }


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def defaults(seeds: list[int], datasets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for dataset in datasets:
        for setting in ("labeled", "few-labels"):
            for seed in seeds:
                t0 = time.perf_counter()
                row = one_run(
                    dataset, setting, seed=seed, temperature=DEFAULT_TEMPERATURE, lambda_=DEFAULT_LAMBDA, baseline=True
                )
                print(f"{dataset} {setting} seed {seed}: {row} ({time.perf_counter() - t0:.1f}s)", flush=True)
                rows.append(row)
    return rows


def sweep(
    seeds: list[int], datasets: list[str], temperatures: list[float], lambdas: list[float]
) -> list[dict[str, Any]]:
    rows = []
    for dataset in datasets:
        for setting in ("labeled", "few-labels"):
            for t in temperatures:
                for lam in lambdas:
                    for seed in seeds:
                        row = one_run(dataset, setting, seed=seed, temperature=t, lambda_=lam, baseline=False)
                        print(f"{dataset} {setting} T={t} λ={lam} seed {seed}: {row['distilled_top1']:.4f}", flush=True)
                        rows.append(row)
    return rows


def table_defaults(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | setting | test examples | teacher | student alone | distilled | gain (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for setting in ("labeled", "few-labels"):
            group = [r for r in rows if r["dataset"] == dataset and r["setting"] == setting]
            if not group:
                continue
            gains = [r["distilled_top1"] - r["alone_top1"] for r in group]
            lines.append(
                f"| {dataset} | {setting} | {group[0]['test_examples']} | "
                f"{mean_std([r['teacher_top1'] for r in group])} | {mean_std([r['alone_top1'] for r in group])} | "
                f"{mean_std([r['distilled_top1'] for r in group])} | {mean_std(gains)} |"
            )
    return "\n".join(lines)


def table_sweep(rows: list[dict[str, Any]]) -> str:
    lines = []
    for dataset, setting in dict.fromkeys((r["dataset"], r["setting"]) for r in rows):
        group = [r for r in rows if r["setting"] == setting and r["dataset"] == dataset]
        ts = sorted({r["temperature"] for r in group})
        lams = sorted({r["lambda"] for r in group})
        lines += [
            f"\n{dataset}, {setting}: distilled top-1 %, mean over seeds\n",
            "| T \\ λ | " + " | ".join(map(str, lams)) + " |",
        ]
        lines.append("|---" * (len(lams) + 1) + "|")
        for t in ts:
            cells = [
                statistics.mean(r["distilled_top1"] for r in group if r["temperature"] == t and r["lambda"] == lam)
                for lam in lams
            ]
            lines.append(f"| {t:g} | " + " | ".join(f"{100 * c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(d, s) for d in dict.fromkeys(r["dataset"] for r in rows) for s in ("labeled", "few-labels")]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, (key, label) in enumerate(
        [("teacher_top1", "teacher"), ("alone_top1", "student alone"), ("distilled_top1", "distilled")]
    ):
        means = [100 * statistics.mean(r[key] for r in rows if (r["dataset"], r["setting"]) == g) for g in groups]
        ax.bar([j + (i - 1) * width for j in range(len(groups))], means, width, label=label)
    ax.set_xticks(range(len(groups)), [f"{d}\n{s}" for d, s in groups])
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(60, 100)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=3)  # below the axis: bars fill it
    ax.set_title("Distillery: teacher vs student alone vs distilled (mean of seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0, 20.0])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sweep:
        rows = sweep(args.seeds or [0, 1], args.datasets, args.temperatures, args.lambdas)
        text = table_sweep(rows)
        write_result("quality_sweep_" + "_".join(args.datasets), {"rows": rows, "table": text})
    else:
        rows = defaults(args.seeds or [0, 1, 2], args.datasets)
        text = table_defaults(rows)
        name = "quality_" + "_".join(args.datasets)
        write_result(name, {"rows": rows, "table": text, "temperature": DEFAULT_TEMPERATURE, "lambda": DEFAULT_LAMBDA})
        plot(rows, RESULTS / f"{name}.png")
    print(text)


if __name__ == "__main__":
    main()
