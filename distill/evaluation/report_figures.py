"""The pictures of report.html beyond the training curves: how well calibrated teacher and student are, where
each is right, and where they disagree.

Every function takes validation logits (N, C) at T = 1 and, where needed, labels (N,) with -1 = unlabeled,
as numpy arrays (or anything `np.asarray` reads, such as CPU tensors), and returns an unsaved matplotlib
`Figure` (built through the Figure API, never pyplot; see plots.py). numpy only: the painter process that
draws them imports no torch (distill/painter.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

TEACHER_COLOR, STUDENT_COLOR = "#4c72b0", "#dd8452"
MAX_ANNOTATED_CLASSES = 12  # beyond this the matrix cells are too small for their counts


def _softmax(logits: Any) -> np.ndarray:
    """In float32, as the metric computes it: a confidence on a bin edge falls in the same bin in both."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)


def reliability_bins(logits: Any, y: Any, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin ((m−1)/M, m/M]: mean confidence, accuracy and count (labeled rows only).

    The bins are those of `distill.evaluation.metrics.expected_calibration_error`; an empty bin has NaN
    confidence and accuracy.
    """
    labels = np.asarray(y)
    mask = labels >= 0
    probs = _softmax(np.asarray(logits)[mask])  # (M, C)
    conf32, predicted = probs.max(axis=1), probs.argmax(axis=1)  # (M,), (M,)
    correct = (predicted == labels[mask]).astype(float)
    bins = np.clip(np.ceil(conf32 * np.float32(n_bins)).astype(int), 1, n_bins) - 1  # (M,) right-closed, as in ECE
    conf = conf32.astype(np.float64)
    count = np.bincount(bins, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore"):
        return {
            "confidence": np.bincount(bins, weights=conf, minlength=n_bins) / count,
            "accuracy": np.bincount(bins, weights=correct, minlength=n_bins) / count,
            "count": count,
        }


def calibration_error(logits: Any, y: Any, n_bins: int = 15) -> float:
    """The ECE of those bins, Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|: the metric's value, from numpy."""
    bins = reliability_bins(logits, y, n_bins)
    used = bins["count"] > 0
    gaps = bins["count"][used] * np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(gaps.sum() / max(bins["count"].sum(), 1.0))


def per_class_accuracy(logits: Any, y: Any, num_classes: int) -> np.ndarray:
    """Accuracy on the labeled examples of each class (C,); NaN for a class with none."""
    labels_all = np.asarray(y)
    mask = labels_all >= 0
    labels = labels_all[mask].astype(np.int64)
    right = (np.asarray(logits)[mask].argmax(axis=1) == labels).astype(float)
    count = np.bincount(labels, minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.bincount(labels, weights=right, minlength=num_classes) / count)


def prediction_matrix(rows: Any, cols: Any, num_classes: int) -> np.ndarray:
    """(C, C) counts of examples whose top-1 is i under `rows` and j under `cols` (no labels needed)."""
    r, c = np.asarray(rows).argmax(axis=1), np.asarray(cols).argmax(axis=1)
    return np.bincount(r * num_classes + c, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def reliability_figure(models: dict[str, Any], y: Any, n_bins: int = 10) -> Any:
    """One panel per model: accuracy per confidence bin (bars) and the bin's mean confidence (black ticks)
    against the diagonal of perfect calibration (Guo et al. 2017, fig. 1). A tick above its bar is
    over-confidence; the ticks' distance to the bars, weighted by the bins' sizes, is the ECE."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(models), 4.4))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    edges = np.linspace(0, 1, n_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / n_bins
    for ax, (name, logits) in zip(axes, models.items(), strict=True):
        bins = reliability_bins(logits, y, n_bins)
        used = bins["count"] > 0
        color = TEACHER_COLOR if name == "teacher" else STUDENT_COLOR
        ax.bar(centers[used], bins["accuracy"][used], width, color=color, edgecolor="white", label="accuracy")
        ax.hlines(bins["confidence"][used], centers[used] - width / 2, centers[used] + width / 2, colors="black",
                  linewidth=2, label="mean confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
        ax.set_title(f"{name}: ECE {calibration_error(logits, y):.3f}, {int(bins['count'].sum())} examples")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top softmax probability)", ylabel="accuracy")
        ax.legend(loc="upper left", fontsize="small")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
    return fig


def per_class_figure(models: dict[str, Any], y: Any, num_classes: int) -> Any:
    """Grouped bars: accuracy of each model on each class's validation examples."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(max(6.0, 0.5 * num_classes + 2), 24), 4))
    ax = fig.subplots()
    xs = np.arange(num_classes)
    width = 0.8 / len(models)
    for i, (name, logits) in enumerate(models.items()):
        color = TEACHER_COLOR if name == "teacher" else STUDENT_COLOR
        offset = (i - (len(models) - 1) / 2) * width
        ax.bar(xs + offset, per_class_accuracy(logits, y, num_classes), width, label=name, color=color)
    if num_classes <= 40:
        ax.set_xticks(xs)
    ax.set(xlabel="class (true label)", ylabel="accuracy", ylim=(0, 1.12), xlim=(-0.6, num_classes - 0.4))
    ax.set_title("accuracy per class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=len(models), fontsize="small")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9)
    return fig


def agreement_matrix_figure(teacher_logits: Any, student_logits: Any, num_classes: int) -> Any:
    """Student prediction (columns) against teacher prediction (rows): the diagonal is agreement; off it,
    which of the teacher's classes the student confuses with which. Colour is the share of the row."""
    from matplotlib.figure import Figure

    counts = prediction_matrix(teacher_logits, student_logits, num_classes)
    with np.errstate(invalid="ignore"):
        share = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    side = min(max(4.5, 0.45 * num_classes + 1.5), 14)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the teacher's predictions")
    if num_classes <= MAX_ANNOTATED_CLASSES:
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(
                    j, i, str(n), ha="center", va="center", fontsize=8, color="white" if share[i, j] > 0.5 else "black"
                )
    if num_classes <= 40:
        ax.set_xticks(range(num_classes))
        ax.set_yticks(range(num_classes))
    agreement = np.trace(counts) / max(counts.sum(), 1)
    ax.set(xlabel="student prediction", ylabel="teacher prediction")
    ax.set_title(f"teacher vs student predictions (agreement {agreement:.1%})")
    fig.subplots_adjust(left=0.1, right=0.88, bottom=0.1, top=0.92)
    return fig
