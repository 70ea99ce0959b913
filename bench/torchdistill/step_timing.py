"""Control for the comparison: the same plain-PyTorch training step timed under whichever torch runs this.

Distillery's venv and torchdistill's run different torch builds (2.13 CPU and 2.14.1 with CUDA libraries);
this measures how much of a wall-time difference is the build itself: `import torch`, then 300 Adam steps
of the benchmark's student (the conv net of `glue.SmallCNN`, channels [8, 16], hidden 64) on random
28×28 batches of 64, written without torchdistill or Distillery so it runs in either venv.

    python bench/torchdistill/step_timing.py      # prints one JSON line
"""

from __future__ import annotations

import json
import time

started = time.perf_counter()
import torch  # noqa: E402  (its import time is part of what is measured)
from torch import nn  # noqa: E402

import_seconds = time.perf_counter() - started


def student() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 64), nn.ReLU(inplace=True), nn.Linear(64, 10),
    )  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    model = student()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    times = []
    for i in range(330):
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 30:  # warm-up excluded
            times.append(time.perf_counter() - t0)
    times.sort()
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "import_torch_s": round(import_seconds, 3),
                "step_ms_median": round(1000 * times[len(times) // 2], 3),
                "steps": len(times),
            }
        )
    )


if __name__ == "__main__":
    main()
