"""Faults injected into real processes: the supervisor and the real engine child (`python -m distill run`,
sandboxed) on Postgres, and the TorchScript allow-list.

- a training child killed with SIGKILL (what the kernel's OOM killer does) while attempts remain goes
  back to the queue with the attempt counted, and the next attempt resumes from its checkpoint and
  succeeds, every metric stored once;
- a child killed on the last attempt fails the job as internal_error (no crash loop).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import JobMetric
from tests.worker.conftest import add_file, add_job, events_of, get_job
from tests.worker.test_supervisor_engine import _background, _wait_for, digits_spec
from worker import supervisor
from worker.runner import run_job

pytestmark = pytest.mark.slow


def _engine_pids(job_id: str) -> list[int]:
    """The engine process of a job: `python -m distill run …/<job_id>/job.json`, not bubblewrap around it and
    not the report painter it forks (same command line, named `distill-painter`, distill/painter.py)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if (
            comm not in ("bwrap", "distill-painter")
            and b"distill" in argv
            and any(job_id.encode() in a and a.endswith(b"job.json") for a in argv)
        ):
            found.append(int(entry.name))
    return found


def test_a_killed_training_child_is_retried_from_its_checkpoint(
    sessions: sessionmaker[Session], settings: Any, teacher_file: Path
) -> None:
    teacher_id = add_file(sessions, settings, teacher_file, purpose="teacher", format="safetensors")
    job_id = add_job(sessions, digits_spec(teacher_id, epochs=6, batch_size=16))
    supervisor.reset_shutdown()
    thread, out = _background(lambda: run_job(job_id, settings=settings, sessions=sessions, worker_id="w1"))
    _wait_for(lambda: "checkpoint" in [e.type for e in events_of(sessions, job_id)])
    pids = _engine_pids(job_id)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)  # only the child: the supervisor lives on
    thread.join(timeout=60)
    assert out == ["queued"]
    job = get_job(sessions, job_id)
    assert (job.status, job.attempt, job.worker_id, job.lease_expires_at, job.dispatched_at) == (
        "queued",
        1,
        None,
        None,
        None,
    )
    types = [e.type for e in events_of(sessions, job_id)]
    assert types[-2:] == ["crash", "requeued"]

    # The reconciler re-sends it; here the next attempt is run directly.
    assert run_job(job_id, settings=settings, sessions=sessions, worker_id="w2") == "succeeded"
    job = get_job(sessions, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2)
    started = [e for e in events_of(sessions, job_id) if e.type == "started"]
    assert [e.data["resumed"] for e in started] == [False, True]
    with sessions() as session:
        rows = session.execute(select(JobMetric.name, JobMetric.step).where(JobMetric.job_id == job_id)).all()
    counts = Counter((r.name, r.step) for r in rows)
    assert counts and max(counts.values()) == 1, "a metric was stored twice"
    assert len({step for name, step in counts if name == "train/loss"}) == 6  # one per epoch, none lost


def test_a_child_killed_on_the_last_attempt_fails_the_job(
    sessions: sessionmaker[Session], settings: Any, teacher_file: Path
) -> None:
    teacher_id = add_file(sessions, settings, teacher_file, purpose="teacher", format="safetensors")
    job_id = add_job(sessions, digits_spec(teacher_id, epochs=6, batch_size=16), attempt=settings.max_attempts - 1)
    supervisor.reset_shutdown()
    thread, out = _background(lambda: run_job(job_id, settings=settings, sessions=sessions, worker_id="w1"))
    _wait_for(lambda: len(_engine_pids(job_id)) == 1 and get_job(sessions, job_id).progress)
    os.kill(_engine_pids(job_id)[0], signal.SIGKILL)
    thread.join(timeout=60)
    assert out == ["failed"]
    job = get_job(sessions, job_id)
    assert (job.status, job.error["code"]) == ("failed", "internal_error")


def test_a_torchscript_teacher_that_reads_files_is_refused_before_it_runs(tmp_path: Path) -> None:
    import torch

    from distill.errors import UserError
    from distill.teachers.torchscript import check_operators, load_torchscript

    evil = tmp_path / "evil.py"
    evil.write_text(
        "import torch\n"
        "class Evil(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        leak = torch.from_file('/etc/passwd', shared=False, size=8, dtype=torch.uint8)\n"
        "        return x + leak.sum()\n"
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("evil_module", evil)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.jit.script(module.Evil()).save(str(tmp_path / "evil.pt"))
    with pytest.raises(UserError) as refused:
        load_torchscript(str(tmp_path / "evil.pt"), device=torch.device("cpu"))
    assert refused.value.code == "unsafe_checkpoint"
    assert "aten::from_file" in refused.value.message

    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    check_operators(torch.jit.script(cnn))  # an ordinary network passes
