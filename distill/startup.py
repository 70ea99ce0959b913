"""Process start-up and exit of `python -m distill run`, kept off the job's critical path.

Measured on the MLP job of docs/BENCHMARKS.md: building any `torch.optim` optimizer imports `torch._dynamo`
(about 1 s on these CPUs, inside the training stage, which also made the first ETA absurd), and the
interpreter's teardown after the last event (torch's and onnxruntime's module and thread cleanup) takes
about as long again. Adam and AdamW use distill/training/fused_adam.py, which needs no torch._dynamo; only
SGD (torch's own) still prefetches it.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
import threading

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the kernel after every batch.

    glibc serves allocations above a threshold (128 KiB, growing to at most 32 MiB) with a fresh mmap and
    unmaps them on free, so a loop that allocates the same large activations every batch pays a page fault
    per 4 KiB page every time (the conv job's teacher pass: 700k minor faults, 40 % of its CPU time). A
    training process reuses the same sizes all run long and exits at the end, so it keeps them: no mmap
    threshold below 1 GiB, no trimming. Returns False where there is no glibc (nothing is changed)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


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
