"""The training loop on a real (tiny) job: repeatability, exact resume, stop, divergence, teacher caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distill.errors import Cancelled, UserError
from distill.events import ListEmitter
from distill.runner import run_job
from distill.training.stop import StopFlag
from tests.engine.digits_job import job_config, make_digits_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_digits_files(tmp_path_factory.mktemp("digits"))


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "student.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_seeded_run_repeats_exactly(files: dict[str, Path], tmp_path: Path) -> None:
    run_job(job_config(files), out_dir=tmp_path / "a")
    run_job(job_config(files), out_dir=tmp_path / "b")
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    run_job(job_config(files, training={"seed": 1}), out_dir=tmp_path / "c")
    assert not torch.equal(weights(tmp_path / "a")["fc.weight"], weights(tmp_path / "c")["fc.weight"])


class StopAtCheck(StopFlag):
    """A stop flag that turns on at its n-th check; the loop checks once after every optimizer step."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.checks, self.n = 0, n

    @property
    def requested(self) -> bool:
        self.checks += 1
        return self.checks >= self.n


# Checks: 1 before training, then one per step and one per epoch end (13 steps per epoch here).
@pytest.mark.parametrize(
    ("augment", "stop_at", "stopped_at"),
    [("none", 20, (1, 5)), ("noise", 20, (1, 5)), ("none", 14, (0, 13)), ("none", 15, (1, 0))],
)
def test_resume_after_stop_ends_with_the_same_weights(
    files: dict[str, Path], tmp_path: Path, augment: str, stop_at: int, stopped_at: tuple[int, int]
) -> None:
    """Stop inside epoch 2, after epoch 1's last step, or at epoch 1's end; resume; compare to a straight run."""
    config = job_config(files, training={"epochs": 3, "augment": augment, "weight_decay": 1e-4})
    run_job(config, out_dir=tmp_path / "straight")

    stopped = ListEmitter()
    with pytest.raises(Cancelled):
        run_job(config, out_dir=tmp_path / "resumed", emit=stopped, stop=StopAtCheck(stop_at))
    last = stopped.of_type("checkpoint")[-1]
    assert (last["epoch"], last["step"]) == stopped_at
    assert not (tmp_path / "resumed" / "student.safetensors").exists()

    resumed = ListEmitter()
    run_job(config, out_dir=tmp_path / "resumed", emit=resumed, resume=True)
    epoch, step = stopped_at
    assert any(f"resumed at epoch {epoch + 1}, step {step}" in e["message"] for e in resumed.of_type("message"))
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))


def test_non_finite_loss_fails_naming_epoch_and_step(files: dict[str, Path], tmp_path: Path) -> None:
    """Inputs scaled by 1e12 and lr 10: the weights overflow within a few steps."""
    data = np.load(files["train"])
    np.savez(tmp_path / "huge.npz", x=data["x"] * 1e12, y=data["y"])
    config = job_config(
        files,
        dataset={"train": str(tmp_path / "huge.npz")},
        training={"lr": 10.0, "optimizer": "sgd", "momentum": 0.0},
    )
    with pytest.raises(UserError) as caught:
        run_job(config, out_dir=tmp_path / "out")
    assert caught.value.code == "diverged"
    assert "epoch 1, step" in caught.value.message


def test_offline_teacher_logits_are_cached_unless_inputs_are_augmented(files: dict[str, Path], tmp_path: Path) -> None:
    cached = ListEmitter()
    report = run_job(job_config(files), out_dir=tmp_path / "cached", emit=cached)
    assert report["settings"]["teacher_cached"] is True
    assert any("teacher logits cached" in e["message"] for e in cached.of_type("message"))

    live = ListEmitter()
    report = run_job(job_config(files, training={"augment": "shift"}), out_dir=tmp_path / "live", emit=live)
    assert report["settings"]["teacher_cached"] is False
    assert not any("teacher logits cached" in e["message"] for e in live.of_type("message"))


def test_cached_and_live_teacher_train_the_same_student(files: dict[str, Path], tmp_path: Path) -> None:
    """Caching is an optimisation only: without augmentation it must not change a single weight."""
    run_job(job_config(files, training={"cache_teacher": True}), out_dir=tmp_path / "cached")
    run_job(job_config(files, training={"cache_teacher": False}), out_dir=tmp_path / "live")
    a, b = weights(tmp_path / "cached"), weights(tmp_path / "live")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_progress_and_metrics_events(files: dict[str, Path], tmp_path: Path) -> None:
    events = ListEmitter()
    run_job(job_config(files, baseline=True), out_dir=tmp_path, emit=events)
    progress = events.of_type("progress")
    assert progress[-1]["fraction"] == 1.0 and progress[-1]["phase"] == "baseline"
    train_progress = [p for p in progress if p["phase"] == "train"]
    # Progress covers the whole job: 3 epochs × 13 steps (400 examples / 32) of distillation, then as many
    # steps of baseline, so the distillation phase ends half way.
    assert train_progress[-1]["step"] == 3 * 13 and train_progress[-1]["steps"] == 2 * 3 * 13
    assert train_progress[-1]["fraction"] == 0.5
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions)
    metrics = [m for m in events.of_type("metrics") if m["phase"] == "train"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert {"train/soft", "train/hard", "val/top1", "val/agreement", "val/kl"} <= set(metrics[-1]["values"])
    result = events.of_type("result")[0]
    names = {a["name"] for a in result["artifacts"]}
    assert {"student.safetensors", "student.pt", "student.onnx", "config.json", "report.json"} <= names


def test_unlabeled_transfer_set_trains_on_the_soft_term_alone(files: dict[str, Path], tmp_path: Path) -> None:
    data = np.load(files["train"])
    np.savez(tmp_path / "unlabeled.npz", x=data["x"])
    events = ListEmitter()
    config = job_config(
        files,
        dataset={"train": str(tmp_path / "unlabeled.npz")},
        knowledge={"lambda": 0.0},
        training={"epochs": 8, "schedule": "constant"},
    )
    report = run_job(config, out_dir=tmp_path / "out", emit=events)
    last = events.of_type("metrics")[-1]["values"]
    assert "train/soft" in last and "train/hard" not in last
    assert report["data"]["train_labeled"] == 0 and report["student"]["top1"] > 0.5  # labeled validation set
    assert report["student"]["agreement"] > 0.5


def test_without_any_labels_agreement_is_the_quality_measure(files: dict[str, Path], tmp_path: Path) -> None:
    for name in ("train", "val"):
        np.savez(tmp_path / f"{name}.npz", x=np.load(files[name])["x"])
    config = job_config(
        files,
        dataset={"train": str(tmp_path / "train.npz"), "validation": str(tmp_path / "val.npz")},
        knowledge={"lambda": 0.0},
        training={"epochs": 8, "schedule": "constant"},
    )
    report = run_job(config, out_dir=tmp_path / "out")
    assert "top1" not in report["student"] and "top1" not in report["teacher"]
    assert report["student"]["agreement"] > 0.5 and report["data"]["num_classes"] == 10


def test_baseline_is_trained_on_the_labeled_examples_with_the_same_step_budget(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data = np.load(files["train"])
    y = data["y"].copy()
    y[100:] = -1  # 100 of 400 labeled
    np.savez(tmp_path / "few.npz", x=data["x"], y=y)
    events = ListEmitter()
    report = run_job(
        job_config(files, dataset={"train": str(tmp_path / "few.npz")}, baseline=True),
        out_dir=tmp_path / "out",
        emit=events,
    )
    last = {p["phase"]: p for p in events.of_type("progress")}  # step and steps count the whole job
    assert last["train"]["step"] == 3 * 13
    assert (
        last["baseline"]["step"] == last["baseline"]["steps"] == 3 * 13 + 10 * 4
    )  # 13 steps × 3 epochs ≈ 4 steps × 10 epochs
    assert report["baseline"]["top1"] > 0.3 and "distillation_gain_top1" in report
