"""Progress over the whole job: every phase (hint stage, distillation, generations, baseline) in one fraction.

The job's phases and their step counts are known before the first step (epochs × steps per epoch), so
`fraction` is steps done over steps planned for the whole job and never goes back, and the ETA is the
pace of this process (steps it ran itself, so a resumed run estimates honestly) times the steps left. The
pace is measured from the first report on: the steps before it carry one-time costs (the teacher pass, the
first step's allocations) that once made the first ETA 300 s for a job that had 0.7 s left; until a
second report there is no ETA.
"""

from __future__ import annotations

import time

from distill.events import Emitter


class JobProgress:
    def __init__(self, emit: Emitter, phases: list[tuple[str, int]]) -> None:
        self.emit = emit
        self.offsets: dict[str, int] = {}
        total = 0
        for name, steps in phases:
            self.offsets[name] = total
            total += steps
        self.total = max(total, 1)
        self.phase = phases[0][0] if phases else ""
        self.fraction = 0.0
        self.fresh = 0  # steps this process ran itself
        self._last_done = 0
        self._pace_from: tuple[float, int] | None = None  # (time, fresh steps) at the first report

    def enter(self, phase: str, *, done: int) -> None:
        """Start (or resume) `phase` with `done` of its steps already behind it."""
        if phase not in self.offsets:
            raise KeyError(f"phase {phase!r} was not planned; planned: {list(self.offsets)}")
        self.phase = phase
        self._last_done = done

    def report(self, *, epoch: int, epochs: int, done: int, step_in_epoch: int) -> None:
        """`done`: steps finished in the current phase."""
        self.fresh += max(0, done - self._last_done)
        self._last_done = done
        overall = self.offsets[self.phase] + done
        self.fraction = max(self.fraction, min(1.0, overall / self.total))
        now, left = time.perf_counter(), self.total - overall
        eta = None
        if self._pace_from is None:
            self._pace_from = (now, self.fresh)
        elif self.fresh > self._pace_from[1]:
            eta = (now - self._pace_from[0]) / (self.fresh - self._pace_from[1]) * left
        self.emit(
            "progress",
            phase=self.phase,
            epoch=epoch,
            epochs=epochs,
            step=overall,
            steps=self.total,
            fraction=round(self.fraction, 4),
            eta_seconds=None if eta is None else round(max(eta, 0.0), 1),
            step_in_epoch=step_in_epoch,
        )
