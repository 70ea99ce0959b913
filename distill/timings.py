"""Where a job's time went, by stage: the report's `timings` (seconds), so a slow job says why.

Stages: data (load and split), teacher_load (read and build the teacher), teacher_pass (the teacher's
outputs on validation, and on the transfer set when they are cached), train (every training phase, its
per-epoch validation and checkpoints included), baseline, export (safetensors, TorchScript, ONNX). The
report's own measurements, plots and HTML come after report.json is written and are not in it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the block and add it to `stage` (a stage entered twice, e.g. two training phases, sums)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def rounded(self) -> dict[str, float]:
        return {stage: round(s, 3) for stage, s in self.seconds.items()}
