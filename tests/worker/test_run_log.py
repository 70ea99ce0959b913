"""Translating the engine's stdout into rows: what is kept, what is dropped, what is rate-limited."""

from __future__ import annotations

import io
import json
from typing import Any

from worker.outcome import final_metrics
from worker.run_log import MAX_LOG_EVENTS, RunLog


def line(type: str, **fields: Any) -> str:
    return json.dumps({"type": type, **fields})


def test_progress_makes_one_event_per_epoch_and_keeps_the_latest() -> None:
    log = RunLog()
    for epoch in (1, 2):
        for step in range(1, 101):
            log.feed(line("progress", phase="train", epoch=epoch, epochs=2, step=step, steps=100, fraction=0.5))
    progress, _, events, _ = log.take()
    assert [e.message for e in events] == ["train: epoch 1/2", "train: epoch 2/2"]
    assert progress == {"phase": "train", "epoch": 2, "epochs": 2, "step": 100, "steps": 100, "fraction": 0.5}
    assert log.take() == (None, None, [], [])  # taken once


def test_metrics_skip_non_finite_values_and_merge_into_the_latest() -> None:
    log = RunLog(metrics={"old": 1.0})
    log.feed(line("metrics", step=5, epoch=1, values={"train/loss": 0.5, "val/top1": float("nan")}))
    log.feed('{"type": "metrics", "step": 6, "epoch": 1, "values": {"train/loss": Infinity}}')
    _, metrics, _, rows = log.take()
    assert metrics == {"old": 1.0, "train/loss": 0.5}
    assert [(r.name, r.step, r.epoch, r.value) for r in rows] == [("train/loss", 5, 1, 0.5)]


def test_errors_are_kept_for_the_final_status_but_a_requested_stop_is_not_an_error() -> None:
    log = RunLog()
    log.feed(line("error", code="cancelled", message="stopped at step 7", param=None))
    assert log.error is None and log.events[-1].level == "info"
    log.feed(line("error", code="shape_mismatch", message="bad", param="student"))
    assert log.error == {"code": "shape_mismatch", "message": "bad", "param": "student"}
    assert log.events[-1].level == "error"


def test_stray_output_is_logged_up_to_a_cap_and_always_kept_in_the_file() -> None:
    out = io.StringIO()
    log = RunLog(stdout_log=out)
    for i in range(MAX_LOG_EVENTS + 10):
        log.feed(f"print {i}")
    log.feed("[1, 2]")  # JSON but not an event
    log.feed(line("telemetry", x=1))  # an event type this worker does not know
    types = [e.type for e in log.events]
    assert types.count("log") == MAX_LOG_EVENTS + 2  # the cap, the warning, the unknown event
    assert out.getvalue().count("\n") == MAX_LOG_EVENTS + 11


def test_final_metrics_flatten_the_report_results_only() -> None:
    report = {
        "student": {"top1": 0.9, "latency_ms": {"median_ms": 0.1}, "architecture": {"name": "mlp"}},
        "teacher": {"top1": 0.95, "format": "onnx"},
        "settings": {"knowledge": {"temperature": 4.0}},
        "data": {"num_classes": 10},
        "speedup": 2.0,
        "baseline": None,
        "ok": True,
    }
    assert final_metrics(report) == {
        "student/top1": 0.9,
        "student/latency_ms/median_ms": 0.1,
        "teacher/top1": 0.95,
        "speedup": 2.0,
    }


def test_backfill_queues_only_the_metrics_jsonl_rows_not_yet_known(tmp_path: Any) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [
        {"name": "train/loss", "step": 10, "epoch": 1, "value": 0.5},
        {"name": "train/loss", "step": 20, "epoch": 2, "value": 0.4},  # the epoch a dead worker never stored
        {"name": "val/top1", "step": 20, "epoch": 2, "value": 0.9},
        {"name": "train/loss", "step": 30, "epoch": 3, "value": float("nan")},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    run_log = RunLog()
    assert run_log.backfill(path, known={("train/loss", 10, 1)}) == 2
    assert [(m.name, m.step, m.epoch, m.value) for m in run_log.metric_rows] == [
        ("train/loss", 20, 2, 0.4),
        ("val/top1", 20, 2, 0.9),
    ]
