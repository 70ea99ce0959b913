"""report.html: the report as pictures, in one file that opens anywhere with no network. Logits and labels are
numpy arrays or CPU tensors (numpy only here: distill/painter.py draws it without torch).

The figures are matplotlib PNGs embedded as base64 `data:` URIs and the styles are inline, so the page
loads nothing: it can be mailed, attached to a ticket or opened from an air-gapped disk. It shows the
headline numbers, the training curves, a reliability diagram of teacher and student, the accuracy of both
per class, and the matrix of the student's predictions against the teacher's.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

from distill.evaluation.plots import training_curves_figure
from distill.evaluation.report_figures import agreement_matrix_figure, per_class_figure, reliability_figure

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.2em; margin: 0 0 8px; }
section { background: #fff; border: 1px solid #e2e5ea; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
table { border-collapse: collapse; } th, td { padding: 4px 12px; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; } img { max-width: 100%; height: auto; }
.muted { color: #667; } .headline { display: flex; gap: 28px; flex-wrap: wrap; margin: 8px 0 0; }
.headline div b { display: block; font-size: 1.5em; }
"""

MODEL_ROWS = (("teacher", "teacher"), ("baseline", "student alone"), ("student", "distilled student"))


def draw_figures(
    history: list[dict[str, Any]], *, teacher_logits: Any, student_logits: Any, labels: Any
) -> dict[str, bytes]:
    """The page's figures as PNG bytes, by section title (only those the data allows). They need no report,
    so a painter draws them while the student is still being exported (distill/painter.py)."""
    num_classes = int(student_logits.shape[1])
    models = (
        {"student": student_logits}
        if teacher_logits is None
        else {"teacher": teacher_logits, "student": student_logits}
    )
    figures = {"Training curves": png_bytes(training_curves_figure(history))}
    if labels is not None:
        figures["Reliability diagram"] = png_bytes(reliability_figure(models, labels))
        figures["Accuracy per class"] = png_bytes(per_class_figure(models, labels, num_classes))
    if teacher_logits is not None:
        figures["Teacher vs student predictions"] = png_bytes(
            agreement_matrix_figure(teacher_logits, student_logits, num_classes)
        )
    return figures


def render_report_html(
    report: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    teacher_logits: Any,
    student_logits: Any,
    labels: Any,
    figures: dict[str, bytes] | None = None,
) -> str:
    """The page. `teacher_logits` is None in self mode (no teacher); `labels` None when validation has none.
    `figures`: `draw_figures`' PNGs when they are drawn already (a figure costs ~0.1 s), else drawn here."""
    if figures is None:
        figures = draw_figures(history, teacher_logits=teacher_logits, student_logits=student_logits, labels=labels)
    sections = [
        _section("Summary", _summary(report)),
        _figure_section("Training curves", figures["Training curves"], "loss and validation quality per epoch"),
    ]
    if labels is None:
        sections.append(_section("Calibration and per-class accuracy", _note("the validation set has no labels")))
    else:
        sections.append(
            _figure_section(
                "Reliability diagram",
                figures["Reliability diagram"],
                "accuracy per confidence bin; a calibrated model follows the diagonal",
            )
        )
        sections.append(_figure_section("Accuracy per class", figures["Accuracy per class"], ""))
    if teacher_logits is None:
        sections.append(_section("Teacher vs student predictions", _note("this job has no teacher (self mode)")))
    else:
        sections.append(
            _figure_section(
                "Teacher vs student predictions",
                figures["Teacher vs student predictions"],
                "the diagonal is where the student agrees with the teacher",
            )
        )
    settings = report.get("settings") or {}
    subtitle = (
        f"mode {settings.get('mode', '?')}, {settings.get('epochs', '?')} epochs, device {settings.get('device', '?')}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Distillery report</title><style>{STYLE}</style></head>\n<body><main>"
        f'<h1>Distillation report</h1><p class="muted">{_e(subtitle)}</p>\n'
        + "\n".join(sections)
        + _section("Settings", f"<pre>{_e(json.dumps(settings.get('knowledge'), indent=2))}</pre>")
        + "</main></body></html>\n"
    )


def png_bytes(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _summary(report: dict[str, Any]) -> str:
    headline = [
        ("compression", _times(report.get("compression_ratio")), "fewer parameters"),
        ("speed-up", _times(report.get("speedup")), "CPU latency, teacher / student"),
        ("size", _times(report.get("size_ratio")), "smaller on disk"),
        ("distillation gain", _points(report.get("distillation_gain_top1")), "top-1 over the student alone"),
    ]
    cards = "".join(
        f'<div><span class="muted">{_e(name)}</span><b>{_e(value)}</b><span class="muted">{_e(hint)}</span></div>'
        for name, value, hint in headline
        if value != "–"
    )
    columns = ("", "top-1", "agreement", "ECE", "parameters", "bytes", "latency (ms)")
    header = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
    rows = []
    for key, label in MODEL_ROWS:
        block = report.get(key)
        if not isinstance(block, dict):
            continue
        latency = (block.get("latency_ms") or {}).get("median_ms")
        agreement = 1.0 if key == "teacher" else block.get("agreement")
        cells = [_pct(block.get("top1")), _pct(agreement), _num(block.get("ece"), 3), _int(block.get("params")),
                 _int(block.get("bytes")), _num(latency, 2)]  # fmt: skip
        rows.append(f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f'<div class="headline">{cards}</div><table>{header}{"".join(rows)}</table>'


def _figure_section(title: str, png: bytes, caption: str) -> str:
    body = f'<img alt="{_e(title)}" src="{png_data_uri(png)}">'
    return _section(title, body + (f'<p class="muted">{_e(caption)}</p>' if caption else ""))


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _note(text: str) -> str:
    return f'<p class="muted">Not shown: {_e(text)}.</p>'


def _e(text: object) -> str:
    return html.escape(str(text))


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "–"


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "–"


def _int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def _times(value: Any) -> str:
    return f"{value:.1f}×" if isinstance(value, int | float) else "–"


def _points(value: Any) -> str:
    return f"{value * 100:+.1f} pts" if isinstance(value, int | float) else "–"
