"""The probe: a short-lived, sandboxed `python -m distill …` for anything that must run an uploaded model.

DESIGN §2 (Untrusted models): the API process never deserializes or runs an uploaded model. What needs one
run (listing a checkpoint's layers now; output sizes and dry runs at submission next) runs here instead:
- a fresh temporary folder as the working directory and HOME, deleted afterwards; stdout and stderr go
  to files in it, so what the child prints is bounded by RLIMIT_FSIZE, not by the API's memory;
- the sandbox of app/sandbox.py (shared with the worker's training child): rlimits always (memory, CPU
  seconds, file size, no core dumps), bubblewrap where the host allows it (`probe_sandbox`: read-only
  filesystem, no network, the service's data folders hidden but for the probe's own inputs, write access
  only to its own folder), plus a wall-clock timeout after which the whole process group is killed;
- an environment without the service's settings (no database URL or other secrets), one CPU thread.

The child follows the engine's exit codes (distill/errors.py): 0 with a JSON object as its last stdout
line, 2 with an error event (the user's input: a UserError here), 1 for our bug (a RuntimeError here, so
the API answers 500 and logs the child's stderr).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import sandbox
from app.settings import Settings
from distill.errors import EXIT_OK, EXIT_USER_ERROR, UserError

log = logging.getLogger(__name__)


class ProbeCrashed(RuntimeError):
    """The probe failed in a way that is our bug (exit 1, or output that is not what the engine prints)."""


@dataclass(frozen=True)
class ProbeLimits:
    timeout_seconds: float
    cpu_seconds: int
    memory_bytes: int
    output_bytes: int
    sandbox: str  # auto | bwrap | off (Settings.probe_sandbox)
    hidden: tuple[Path, ...] = field(default=())  # folders the child must not see (the service's data)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProbeLimits:
        return cls(
            timeout_seconds=settings.probe_timeout_seconds,
            cpu_seconds=settings.probe_cpu_seconds,
            memory_bytes=settings.probe_memory_mb * 1024 * 1024,
            output_bytes=settings.probe_output_mb * 1024 * 1024,
            sandbox=settings.probe_sandbox,
            hidden=tuple(service_folders(settings)),
        )


def service_folders(settings: Settings) -> list[Path]:
    """The folders with the service's data (every tenant's uploads and artifacts, the broker, the database)."""
    hidden = [settings.upload_dir, settings.artifact_dir, settings.broker_dir]
    if settings.database_url.startswith("sqlite:///"):
        hidden.append(Path(settings.database_url.removeprefix("sqlite:///")).parent)
    return hidden


def run_probe(
    args: Sequence[str],
    *,
    limits: ProbeLimits,
    inputs: Sequence[Path] = (),
    files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run `python -m distill ARGS` in the sandbox; return the JSON object it printed last.

    `inputs` are the files the child may read among the hidden folders (the uploads it inspects); `files`
    (name → text) are written into its working folder first (e.g. the job.json it checks). Raises
    UserError for an error event (exit 2), `probe_timeout` and `probe_limit_exceeded`; ProbeCrashed else.
    """
    with tempfile.TemporaryDirectory(prefix="distillery-probe-") as folder:
        work = Path(folder).resolve()
        for name, text in (files or {}).items():
            (work / name).write_text(text)
        command = [sys.executable, "-m", "distill", *args]
        try:
            sandboxed = sandbox.use_bwrap(limits.sandbox)
        except RuntimeError as exc:
            raise ProbeCrashed(str(exc)) from None
        if sandboxed:
            command = sandbox.bwrap_command(command, work=work, inputs=inputs, hidden=limits.hidden)
        code, timed_out = _run(command, work=work, limits=limits)
        stdout = (work / "stdout").read_bytes()[: limits.output_bytes].decode("utf-8", errors="replace")
        stderr = (work / "stderr").read_bytes()[-8000:].decode("utf-8", errors="replace")
    killed_by = sandbox.exit_signal(code, sandboxed=sandboxed)
    if timed_out or killed_by == signal.SIGXCPU:
        raise UserError(
            f"the model did not finish within the probe's limits ({limits.timeout_seconds:g} s wall clock, "
            f"{limits.cpu_seconds} s CPU); try a smaller input_shape",
            code="probe_timeout",
        )
    if killed_by is not None:
        raise UserError(
            f"running the model was stopped by {signal.Signals(killed_by).name} (the probe may use at most "
            f"{limits.memory_bytes // 2**20} MiB and write {limits.output_bytes // 2**20} MiB); try a smaller "
            "input_shape",
            code="probe_limit_exceeded",
        )
    last = _last_json(stdout)
    if code == EXIT_USER_ERROR and last is not None and last.get("type") == "error":
        raise UserError(str(last.get("message")), code=str(last.get("code")), param=last.get("param"))
    if code == EXIT_OK and last is not None and last.get("type") != "error":
        return last
    log.error("probe %s exited with %s; stderr:\n%s", list(args[:1]), code, stderr)
    raise ProbeCrashed(f"the probe exited with {code}")


def _last_json(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _run(command: list[str], *, work: Path, limits: ProbeLimits) -> tuple[int, bool]:
    """(exit code, timed out); the process group is killed on timeout, and reaped in every case."""
    rlimits = sandbox.Rlimits(
        cpu_seconds=limits.cpu_seconds, memory_bytes=limits.memory_bytes, file_bytes=limits.output_bytes
    )
    with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
        process = subprocess.Popen(
            command,
            cwd=work,
            env=_environment(work),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: the timeout kills everything it started
            preexec_fn=sandbox.preexec(rlimits),
        )
    try:
        return process.wait(timeout=limits.timeout_seconds), False
    except subprocess.TimeoutExpired:
        return _kill(process), True
    except BaseException:  # the request was cancelled: never leave a probe behind
        _kill(process)
        raise


def _kill(process: subprocess.Popen[bytes]) -> int:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def _environment(work: Path) -> dict[str, str]:
    """Only what Python and torch need: none of the service's DISTILLERY_* settings reach the model."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "TMPDIR": str(work),
        "PYTHONPATH": str(sandbox.SOURCE_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
        # One thread: each thread costs address space (stacks, malloc arenas) under RLIMIT_AS, and a probe
        # runs one small forward pass.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "CUDA_VISIBLE_DEVICES": "",
    }


def bwrap_works() -> bool:
    """Kept for callers of the probe module (readiness checks, tests): see app.sandbox.bwrap_works."""
    return sandbox.bwrap_works()
