"""A stand-in for `python -m distill` that speaks the same contract (argv, JSON lines, exit codes) in
milliseconds, for the supervisor's failure paths that a real run cannot produce on demand: a crash with a
traceback, a run that never ends, a lease lost mid-run, a worker shutdown. The behaviour comes from the
job document's `metadata.fake`.

Usage (what the supervisor runs): python fake_engine.py run JOB.json --out DIR --device DEV [--resume]
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any


def emit(type: str, **fields: Any) -> None:
    print(json.dumps({"type": type, **fields}), flush=True)


def main(argv: list[str]) -> int:
    assert argv[0] == "run", argv
    job = json.loads(Path(argv[1]).read_text())
    out = Path(argv[argv.index("--out") + 1])
    behaviour = job.get("metadata", {}).get("fake", "succeed")
    stopping = False

    def on_sigterm(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_sigterm)
    emit("message", level="info", message="argv " + " ".join(argv))
    print("a stray print that is not JSON", flush=True)

    if behaviour == "crash":
        emit("progress", phase="train", epoch=1, epochs=2, step=1, steps=10, fraction=0.1, eta_seconds=1.0)
        raise RuntimeError("boom: a bug in the engine")
    if behaviour == "user_error":
        emit("error", code="shape_mismatch", message="the teacher outputs 3 classes, the data has 10", param="teacher")
        return 2
    if behaviour == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if behaviour in ("forever", "ignore_sigterm"):
        step = 0
        while not stopping or behaviour == "ignore_sigterm":
            step += 1
            epoch = 1 + step // 50
            emit("progress", phase="train", epoch=epoch, epochs=100, step=step, steps=5000, fraction=step / 5000)
            if step % 10 == 0:
                emit("metrics", step=step, epoch=epoch, values={"train/loss": 1.0 / step})
            time.sleep(0.02)
        (out / "checkpoint.pt").write_bytes(b"checkpoint")
        emit("checkpoint", epoch=1, path=str(out / "checkpoint.pt"))
        emit("error", code="cancelled", message=f"stopped at step {step}", param=None)
        return 3
    # succeed: a few events, one artifact
    for step in range(1, 4):
        emit("progress", phase="train", epoch=step, epochs=3, step=step, steps=3, fraction=step / 3, eta_seconds=0)
        emit("metrics", step=step, epoch=step, values={"train/loss": 1.0 / step, "val/top1": 0.5 + step / 10})
    (out / "student.safetensors").write_bytes(b"weights")
    emit("result", report={"student": {"top1": 0.8}}, artifacts=[{"name": "student.safetensors"}])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
