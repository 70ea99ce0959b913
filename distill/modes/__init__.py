"""The one place that knows the modes (DESIGN §1): which phases a job has and how each is trained.

offline — a frozen teacher (modes/offline.py); online — deep mutual learning (modes/online.py);
self — `heads` (modes/self_heads.py) or `born_again` (modes/born_again.py). The training loop itself is
the same function for all of them.
"""

from __future__ import annotations

from torch import Tensor

from distill.config import JobConfig
from distill.modes import born_again, offline, online, self_heads
from distill.modes.context import JobContext, ModeResult
from distill.teachers import Teacher


def needs_file_teacher(config: JobConfig) -> bool:
    """Offline, and online from a checkpoint, read the uploaded teacher; scratch and self modes do not."""
    return config.teacher is not None and config.teacher.init == "checkpoint"


def plan_phases(config: JobConfig, n_train: int) -> list[tuple[str, int]]:
    """(phase name, optimizer steps) of the mode, in order: what progress over the whole job counts."""
    if config.mode == "offline":
        return offline.phases(config, n_train)
    if config.mode == "online":
        return online.phases(config, n_train)
    assert config.self_ is not None
    if config.self_.method == "born_again":
        return born_again.phases(config, n_train)
    return self_heads.phases(config, n_train)


def run_mode(ctx: JobContext, teacher: Teacher | None, teacher_val: Tensor | None) -> ModeResult:
    config = ctx.config
    if config.mode == "offline":
        assert teacher is not None and teacher_val is not None
        return offline.run(ctx, teacher, teacher_val)
    if config.mode == "online":
        return online.run(ctx, teacher, teacher_val)
    assert config.self_ is not None
    if config.self_.method == "born_again":
        return born_again.run(ctx)
    return self_heads.run(ctx)


__all__ = ["JobContext", "ModeResult", "needs_file_teacher", "plan_phases", "run_mode"]
