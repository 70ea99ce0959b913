"""Verdicts of the submission check: a job whose check passed before is not checked again.

The check (app/jobs/validation.py) builds the models and runs them on the data: ~10 ms in this process for
registry architectures on built-in data, and a fresh sandboxed interpreter of 1-2 CPU-seconds for uploaded
models (app/probe.py). Its verdict is a function of what `verdict_key` digests, so a pass is remembered:
- in this process (`remember` / `remembered`, a bounded LRU), for every check;
- in `check_verdicts` (app/checks/repository.py), for the probe's, so other API processes and restarts skip
  it too (written with the job, see app/jobs/service.py).
A refusal is never remembered: a hostile upload is run in the sandbox, and refused, every time.

`once` runs identical checks that arrive together once: the others wait for it and share its pass. A
follower whose leader did not pass runs its own check, so each refusal comes from a check of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import distill

MEMORY_SIZE = 10_000  # keys are 64 characters: ~1 MB at most
# Whatever changes what the check decides: the engine's own code is digested, these by version.
_LIBRARIES = ("torch", "numpy", "safetensors", "onnx", "onnxscript", "onnxruntime", "scikit-learn", "mlxtend")

_passed: OrderedDict[str, None] = OrderedDict()
_passed_lock = threading.Lock()
# Checks under way, per event loop (an asyncio.Event belongs to the loop that awaits it; tests run several).
_flights: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Event]] = weakref.WeakKeyDictionary()


def verdict_key(*, tenant: str, job: dict[str, Any], probe: dict[str, Any] | None) -> str:
    """The digest a verdict is stored under.

    `job`: the engine's job document as the check reads it (only the fields the client set), each uploaded
    file as its sha256 and format instead of its path, without `training` and `metadata`: the check reads
    neither (the seed only orders the examples within each label of the validation split, which changes
    no shape, label count or layer). `probe`: the sandbox and limits it ran under (None: in this process),
    since a pass under looser limits says nothing about tighter ones. The engine's fingerprint ends every
    verdict at an upgrade. The tenant keeps verdicts apart (see app/models/check_verdict.py).
    """
    checked = {k: v for k, v in job.items() if k not in ("training", "metadata")}
    payload = {"tenant": tenant, "engine": engine_fingerprint(), "job": checked, "probe": probe}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache
def engine_fingerprint() -> str:
    """The engine's source and the versions of the libraries it checks with (read once per process)."""
    digest = hashlib.sha256()
    root = Path(distill.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in _LIBRARIES:
        try:
            digest.update(f"{name}={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=-\0".encode())
    return digest.hexdigest()


def remembered(key: str) -> bool:
    with _passed_lock:
        if key in _passed:
            _passed.move_to_end(key)
            return True
        return False


def remember(key: str) -> None:
    with _passed_lock:
        _passed[key] = None
        _passed.move_to_end(key)
        while len(_passed) > MEMORY_SIZE:
            _passed.popitem(last=False)


async def once(key: str, check: Callable[[], Awaitable[None]]) -> None:
    """Run `check` (it raises to refuse) unless `key` passed already; identical ones at once wait for the first."""
    if remembered(key):
        return
    flights = _flights.setdefault(asyncio.get_running_loop(), {})
    leader = flights.get(key)
    if leader is not None:
        await leader.wait()
        if remembered(key):
            return
        await check()  # the leader did not pass (or was cancelled): this submission gets its own check
        remember(key)
        return
    done = flights[key] = asyncio.Event()
    try:
        await check()
        remember(key)
    finally:
        del flights[key]
        done.set()
