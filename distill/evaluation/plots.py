"""Two pictures for the report: the training curves, and teacher vs student side by side.

matplotlib is imported inside the functions (it is slow to import and only the report needs it) and used
through `Figure` + the Agg canvas directly, never pyplot: no global backend state, no display needed, safe
in a worker process.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

LOSS_LEAVES = {"loss", "soft", "hard", "nll", "kl"}
ACCURACY_LEAVES = {"top1", "top5", "accuracy", "agreement"}


def _series(metrics: list[dict[str, Any]], leaves: set[str]) -> dict[str, tuple[list[float], list[float]]]:
    """name → (x, y) for the records whose last path segment is in `leaves`; x is the step (else epoch)."""
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i, record in enumerate(metrics):
        name, value = record.get("name"), record.get("value")
        if not isinstance(name, str) or not isinstance(value, int | float) or name.rsplit("/", 1)[-1] not in leaves:
            continue
        x = record.get("step", record.get("epoch", i))
        points[name].append((float(x if x is not None else i), float(value)))
    out = {}
    for name, pts in sorted(points.items()):
        pts.sort()
        out[name] = ([x for x, _ in pts], [y for _, y in pts])
    return out


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(os.fspath(path), format="png", dpi=100)


def plot_training_curves(metrics: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Losses (left) and validation accuracy / agreement (right) against the training step.

    `metrics` are the records `{"name", "step", "epoch", "value"}` the training loop emits; names are matched
    by their last segment (`train/loss`, `train/soft`, `val/top1`, `val/agreement`), others are ignored.
    """
    _save(training_curves_figure(metrics), path)


def training_curves_figure(metrics: list[dict[str, Any]]) -> Any:
    """The figure of `plot_training_curves`, unsaved (report.html embeds it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))  # fixed margins: constrained layout costs ~0.3 s a figure
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, leaves, title in ((loss_ax, LOSS_LEAVES, "loss"), (acc_ax, ACCURACY_LEAVES, "accuracy / agreement")):
        series = _series(metrics, leaves)
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return fig


def _first(section: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = section.get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


COMPARISON_ROWS = (
    ("teacher", ("teacher",)),
    ("student alone", ("baseline", "student_alone", "student_only")),
    ("distilled", ("student", "distilled")),
)


def plot_comparison(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Bars of top-1 accuracy and agreement with the teacher for teacher / student alone / distilled.

    Reads `report[<model>]["top1"]` (or "accuracy") and `report[<model>]["agreement"]` where <model> is
    `teacher`, `baseline` (also `student_alone`/`student_only`) and `student` (also `distilled`); a missing
    model or metric is simply left out.
    """
    from matplotlib.figure import Figure

    labels: list[str] = []
    accuracy: list[float] = []
    agree: list[float] = []
    for label, keys in COMPARISON_ROWS:
        section = next((report[k] for k in keys if isinstance(report.get(k), dict)), None)
        if section is None:
            continue
        acc = _first(section, ("top1", "accuracy"))
        # The teacher agrees with itself by definition.
        agr = 1.0 if label == "teacher" else _first(section, ("agreement",))
        if acc is None and agr is None:
            continue
        labels.append(label)
        accuracy.append(float("nan") if acc is None else acc)
        agree.append(float("nan") if agr is None else agr)

    fig = Figure(figsize=(6, 4))  # fixed margins: constrained layout costs ~0.3 s a figure
    ax = fig.subplots()
    if labels:
        width = 0.38
        xs = list(range(len(labels)))
        for offset, values, name in ((-width / 2, accuracy, "top-1 accuracy"), (width / 2, agree, "agreement")):
            bars = ax.bar([x + offset for x in xs], values, width, label=name)
            ax.bar_label(bars, labels=["" if v != v else f"{v:.3f}" for v in values], fontsize="small")
        ax.set_xticks(xs, labels)
        ax.set_ylim(0, 1.25)  # headroom above the bars for the legend
        ax.legend(loc="upper center", ncols=2, fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("teacher vs student")
    _save(fig, path)
