"""Process start-up and exit of `python -m distill run`, kept off the job's critical path.

Measured on the MLP job of docs/BENCHMARKS.md: the first `torch.optim` step imports `torch._dynamo` (about
1 s on these CPUs, spent inside the first training step, which also made the first ETA absurd), and the
interpreter's teardown after the last event (torch's and onnxruntime's module and thread cleanup) takes
about as long again.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading


def prefetch_imports(modules: tuple[str, ...] = ("torch._dynamo",)) -> threading.Thread:
    """Import `modules` on a daemon thread while the job loads its data and teacher (torch releases the GIL
    in its kernels, so the two overlap); the training step that needs them then finds them imported."""

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the step that needs it will import it (and raise) itself
                return

    thread = threading.Thread(target=load, name="prefetch-imports", daemon=True)
    thread.start()
    return thread


def exit_now(code: int) -> None:
    """End the process at once with `code` once everything is written: stdio flushed, every artifact file
    closed by its writer. Skips the interpreter's slow teardown; only for `python -m distill`, never a
    library caller."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
