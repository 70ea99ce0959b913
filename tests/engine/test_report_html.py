"""report.html: a real run's report as pictures, in one file that needs no network to open."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.evaluation.report_figures import per_class_accuracy, prediction_matrix, reliability_bins
from distill.evaluation.report_html import render_report_html
from distill.events import ListEmitter
from distill.runner import run_job
from tests.engine.digits_job import job_config, make_digits_files

FIGURES = {"Training curves", "Reliability diagram", "Accuracy per class", "Teacher vs student predictions"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Images(HTMLParser):
    """Every <img> (alt → src) and every URL-bearing attribute (href, src, …) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, str] = {}
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images[values.get("alt") or ""] = values.get("src") or ""
        self.urls += [v for k, v in attrs if k in ("href", "src", "action", "srcset", "poster") and v]


def parse(page: str) -> Images:
    parser = Images()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ListEmitter]:
    """A tiny real run on the built-in digits (2 epochs, with the student-alone baseline): its output folder."""
    folder = tmp_path_factory.mktemp("report_html")
    events = ListEmitter()
    config = job_config(make_digits_files(folder), training={"epochs": 2}, baseline=True)
    run_job(config, out_dir=folder / "out", emit=events)
    return folder / "out", events


def test_a_run_writes_a_self_contained_report_html(run: tuple[Path, ListEmitter]) -> None:
    page = (run[0] / "report.html").read_text(encoding="utf-8")
    found = parse(page)
    assert set(found.images) >= FIGURES, found.images.keys()
    for alt in FIGURES:
        src = found.images[alt]
        assert src.startswith("data:image/png;base64,"), (alt, src[:60])
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_MAGIC) and len(png) > 5_000, (alt, len(png))
    # Nothing to fetch: every src is inline data, and no http(s) URL appears anywhere in the page.
    assert all(url.startswith("data:") for url in found.urls), found.urls
    assert not re.search(r"https?:", page, flags=re.IGNORECASE)
    assert "distilled student" in page and "student alone" in page  # the summary table has all three models


def test_report_html_embeds_the_training_curves_png_it_was_given(run: tuple[Path, ListEmitter]) -> None:
    """The runner draws training_curves.png once; the page embeds those very bytes instead of drawing again."""
    out, _ = run
    curves = (out / "training_curves.png").read_bytes()
    src = parse((out / "report.html").read_text()).images["Training curves"]
    assert base64.b64decode(src.split(",", 1)[1]) == curves


def test_the_result_event_lists_report_html(run: tuple[Path, ListEmitter]) -> None:
    out, events = run
    artifacts = {a["name"]: a for a in events.of_type("result")[0]["artifacts"]}
    assert artifacts["report.html"]["bytes"] == (out / "report.html").stat().st_size
    assert artifacts["report.html"]["path"] == str(out / "report.html")


def test_without_labels_or_teacher_the_figures_that_need_them_are_explained() -> None:
    torch.manual_seed(0)
    logits = torch.randn(50, 4)
    page = render_report_html(
        {"settings": {"mode": "self"}}, [], teacher_logits=None, student_logits=logits, labels=None
    )
    found = parse(page)
    assert set(found.images) == {"Training curves"}
    assert "the validation set has no labels" in page and "this job has no teacher" in page


def test_reliability_bins_match_the_ece_bins() -> None:
    # Confidences 0.5 (bin 5 of 10 is (0.4, 0.5]: right-closed) and 0.9 (bin 9, (0.8, 0.9]).
    half = torch.tensor([[0.0, 0.0]])  # softmax → 0.5
    sure = torch.tensor([[np.log(9.0), 0.0]])  # softmax → 0.9
    logits = torch.cat([half, half, sure, sure, sure]).float()
    y = torch.tensor([0, 1, 0, 0, 1])  # argmax is 0 for all: right, wrong, right, right, wrong
    bins = reliability_bins(logits, y, n_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 2, 0, 0, 0, 3, 0]
    assert bins["accuracy"][4] == pytest.approx(0.5) and bins["accuracy"][8] == pytest.approx(2 / 3)
    assert bins["confidence"][8] == pytest.approx(0.9, abs=1e-6) and np.isnan(bins["accuracy"][0])


def test_per_class_accuracy_and_prediction_matrix() -> None:
    eye = torch.eye(3)
    teacher = eye[[0, 1, 2, 2]]  # predictions 0 1 2 2
    student = eye[[0, 2, 2, 1]]  # predictions 0 2 2 1
    y = torch.tensor([0, 1, 2, -1])  # the last is unlabeled: ignored by accuracy, kept by the matrix
    assert per_class_accuracy(student, y, 3).tolist() == [1.0, 0.0, 1.0]
    assert prediction_matrix(teacher, student, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_the_figures_ece_is_the_metrics_ece() -> None:
    """The reliability panel's title computes the ECE in numpy (the painter has no torch): same value."""
    from distill.evaluation.metrics import expected_calibration_error
    from distill.evaluation.report_figures import calibration_error

    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 7, generator=generator)
    y = torch.randint(-1, 7, (500,), generator=generator)  # -1: unlabeled, ignored by both
    assert calibration_error(logits.numpy(), y.numpy()) == pytest.approx(
        expected_calibration_error(logits, y), abs=1e-6
    )
