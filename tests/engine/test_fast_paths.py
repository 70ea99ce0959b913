"""The engine's fast paths (issue 10) give exactly what the general paths give.

- FusedAdam (distill/training/fused_adam.py) against torch's own fused Adam / AdamW, step by step, and their
  state dicts read by each other;
- the soft term on a cached teacher's precomputed log-probabilities, and the hard term's plain mean on a
  fully labeled set, against the per-step computations;
- an Adam job never imports torch._dynamo (a second of start-up); the report says where the time went.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.losses import HardLabelLoss, Outputs, SoftTargetLoss
from distill.runner import run_job
from distill.training.fused_adam import FusedAdam
from distill.training.teacher_signal import CachedOutputs
from tests.engine.digits_job import job_config, make_digits_files, write_job

ROOT = Path(__file__).resolve().parents[2]


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def train_steps(model: nn.Module, optimizer: object, steps: range, *, freeze_first: bool = False) -> None:
    generator = torch.Generator().manual_seed(1)
    for step in steps:
        x, y = torch.randn(6, 12, generator=generator), torch.randint(0, 3, (6,), generator=generator)
        for group in optimizer.param_groups:  # type: ignore[attr-defined]
            group["lr"] = 0.02 * (1 - step / 40)  # what the per-step schedule does
        for p in model.parameters():
            p.grad = None
        loss = F.cross_entropy(model(x), y)
        if freeze_first:  # the first layer gets no gradient at all
            loss = F.cross_entropy(model[2](model[1](model[0](x).detach())), y)
        loss.backward()
        optimizer.step()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("decoupled", "weight_decay"), [(False, 0.0), (False, 0.01), (True, 0.01)])
def test_fused_adam_is_bit_identical_to_torch(decoupled: bool, weight_decay: float) -> None:
    ours_net, torch_net = small_net(), small_net()
    ours = FusedAdam(ours_net.parameters(), lr=0.02, weight_decay=weight_decay, decoupled_weight_decay=decoupled)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    theirs = kind(torch_net.parameters(), lr=0.02, weight_decay=weight_decay, fused=True)
    train_steps(ours_net, ours, range(0, 15))
    train_steps(torch_net, theirs, range(0, 15))
    # Each reads the other's state dict (a checkpoint written by either resumes in either).
    ours_state, theirs_state = copy.deepcopy(ours.state_dict()), copy.deepcopy(theirs.state_dict())
    ours.load_state_dict(theirs_state)
    theirs.load_state_dict(ours_state)
    train_steps(ours_net, ours, range(15, 30))
    train_steps(torch_net, theirs, range(15, 30))
    for a, b in zip(ours_net.parameters(), torch_net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert set(ours.state_dict()["state"]) == set(theirs.state_dict()["state"]) == {0, 1, 2, 3}


def test_fused_adam_leaves_parameters_without_a_gradient_alone() -> None:
    ours_net, torch_net = small_net(), small_net()
    ours = FusedAdam(ours_net.parameters(), lr=0.02, weight_decay=0.0, decoupled_weight_decay=False)
    theirs = torch.optim.Adam(torch_net.parameters(), lr=0.02, fused=True)
    before = ours_net[0].weight.detach().clone()
    train_steps(ours_net, ours, range(5), freeze_first=True)
    train_steps(torch_net, theirs, range(5), freeze_first=True)
    assert torch.equal(ours_net[0].weight, before)
    for a, b in zip(ours_net.parameters(), torch_net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert set(ours.state_dict()["state"]) == set(theirs.state_dict()["state"]) == {2, 3}


def test_fused_adam_refuses_a_state_of_another_size() -> None:
    ours = FusedAdam(small_net().parameters(), lr=0.02, weight_decay=0.0, decoupled_weight_decay=False)
    other = torch.optim.Adam(nn.Linear(2, 2).parameters(), fused=True)
    with pytest.raises(ValueError, match="2 parameters"):
        ours.load_state_dict(other.state_dict())


def test_soft_term_on_cached_log_probs_equals_the_per_step_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    teacher_logits = 3 * torch.randn(50, 5, generator=generator)
    idx = torch.randperm(50, generator=generator)[:16]
    cached = CachedOutputs(Outputs(teacher_logits), temperatures=[4.0])(idx, torch.zeros(16, 1))
    assert set(cached.log_probs) == {4.0}
    plain = Outputs(teacher_logits[idx])
    student = torch.randn(16, 5, generator=generator, requires_grad=True)
    loss = SoftTargetLoss(4.0)
    with_cache = loss(Outputs(student), cached, None)
    (grad_cache,) = torch.autograd.grad(with_cache, student)
    without = loss(Outputs(student), plain, None)
    (grad_plain,) = torch.autograd.grad(without, student)
    assert torch.equal(with_cache, without)
    assert torch.equal(grad_cache, grad_plain)
    # Another temperature than the cached one computes its own targets.
    other = SoftTargetLoss(2.0)
    assert torch.equal(other(Outputs(student), cached, None), other(Outputs(student), plain, None))


def test_fully_labeled_hard_term_is_the_general_one() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=generator, requires_grad=True)
    y = torch.randint(0, 5, (16,), generator=generator)
    fast, general = HardLabelLoss(fully_labeled=True), HardLabelLoss()
    a, b = fast(Outputs(logits), None, y), general(Outputs(logits), None, y)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(
        torch.autograd.grad(a, logits)[0], torch.autograd.grad(b, logits)[0], rtol=1e-6, atol=1e-8
    )


def test_report_says_where_the_time_went(tmp_path: Path) -> None:
    files = make_digits_files(tmp_path)
    report = run_job(job_config(files, training={"epochs": 1}), out_dir=tmp_path / "out")
    timings = report["timings"]
    assert {"data", "teacher_load", "teacher_pass", "train", "export"} <= set(timings)
    assert all(isinstance(v, float) and v >= 0 for v in timings.values())
    assert json.loads((tmp_path / "out" / "report.json").read_text())["timings"] == timings


def test_an_adam_job_never_imports_torch_dynamo(tmp_path: Path) -> None:
    """Building any torch.optim optimizer, or running a model on the meta device, imports torch._dynamo
    (about a second); the engine's Adam path does neither. Run in a fresh interpreter, as a job runs."""
    files = make_digits_files(tmp_path)
    job = write_job(tmp_path, files, training={"epochs": 1, "optimizer": "adam"})
    code = (
        "import sys, pathlib\n"
        "from distill.cli import load_job_file\n"
        "from distill.runner import run_job\n"
        f"run_job(load_job_file(pathlib.Path({str(job)!r})), out_dir=pathlib.Path({str(tmp_path / 'out')!r}))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "out" / "student.onnx").exists()


def test_eta_is_the_pace_after_the_first_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first report pays one-time costs (teacher pass, first step): the ETA starts from the second."""
    from distill.events import ListEmitter
    from distill.training import job_progress

    clock = iter([10.0, 10.5, 11.5])  # first report after a slow start, then 1 s per 100 steps
    monkeypatch.setattr(job_progress.time, "perf_counter", lambda: next(clock))
    events = ListEmitter()
    progress = job_progress.JobProgress(events, [("train", 1000)])
    progress.enter("train", done=0)
    for done in (1, 51, 151):
        progress.report(epoch=1, epochs=1, done=done, step_in_epoch=done)
    etas = [e["eta_seconds"] for e in events.of_type("progress")]
    assert etas[0] is None
    assert etas[1] == pytest.approx(0.5 / 50 * 949, abs=0.05)  # rounded to 0.1 s
    assert etas[2] == pytest.approx(1.5 / 150 * 849, abs=0.05)


def painter_requests(painter: object, out: Path) -> None:
    out.mkdir()
    generator = torch.Generator().manual_seed(0)
    history = [{"name": "train/loss", "step": s, "epoch": s, "value": 1.0 / s} for s in range(1, 6)]
    history += [{"name": "val/top1", "step": s, "epoch": s, "value": 0.5 + s / 20} for s in range(1, 6)]
    teacher, student = torch.randn(60, 4, generator=generator), torch.randn(60, 4, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    report = {"teacher": {"top1": 0.9}, "student": {"top1": 0.8, "agreement": 0.85}, "settings": {"mode": "offline"}}
    painter.figures(out, history, teacher_logits=teacher, student_logits=student, labels=labels)  # type: ignore[attr-defined]
    painter.report(out, report, history)  # type: ignore[attr-defined]
    painter.finish()  # type: ignore[attr-defined]


PICTURES = ("training_curves.png", "comparison.png", "report.html")


def test_the_forked_painter_draws_what_the_inline_one_draws(tmp_path: Path) -> None:
    """Forked as `python -m distill run` forks it: before torch is imported (a fork after torch has started
    its thread pool may hang the child, so this runs in a fresh interpreter)."""
    from distill.painter import InlinePainter

    code = (
        "import sys, pathlib\n"
        "from distill.painter import ForkedPainter\n"
        "painter = ForkedPainter.start()\n"
        "from tests.engine.test_fast_paths import painter_requests\n"
        f"painter_requests(painter, pathlib.Path({str(tmp_path / 'forked')!r}))\n"
        "print(type(painter).__name__, painter._failed, painter._process.is_alive())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ForkedPainter", "False", "False"]  # it drew everything, then ended
    painter_requests(InlinePainter(), tmp_path / "inline")
    for name in PICTURES:
        assert (tmp_path / "forked" / name).read_bytes() == (tmp_path / "inline" / name).read_bytes(), name


def test_a_painter_that_died_is_replaced_by_drawing_here(tmp_path: Path) -> None:
    from distill.painter import ForkedPainter

    forked = ForkedPainter.start()
    assert isinstance(forked, ForkedPainter)
    forked._process.kill()
    forked._process.join()
    painter_requests(forked, tmp_path / "out")
    assert all((tmp_path / "out" / name).stat().st_size > 1000 for name in PICTURES)
