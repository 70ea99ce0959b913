"""The probe: a short-lived, sandboxed `python -m distill …` for anything that must run an uploaded model.

DESIGN §2 (Untrusted models): the API process never deserializes or runs an uploaded model. What needs one
run (listing a checkpoint's layers now; output sizes and dry runs at submission next) runs here instead:
- a fresh temporary folder as the working directory and HOME, deleted afterwards; stdout and stderr go
  to files in it, so what the child prints is bounded by RLIMIT_FSIZE, not by the API's memory;
- rlimits, always: address space (memory), CPU seconds, file size, no core dumps; plus a wall-clock
  timeout after which the whole process group is killed;
- bubblewrap where the host allows it (`probe_sandbox`): the filesystem read-only, no network, its own
  PID and IPC namespaces, /tmp and the service's data folders (uploads, artifacts, broker, database)
  hidden except for the probe's own input files, write access only to its own folder;
- an environment without the service's settings (no database URL or other secrets), one CPU thread.

The child follows the engine's exit codes (distill/errors.py): 0 with a JSON object as its last stdout
line, 2 with an error event (the user's input: a UserError here), 1 for our bug (a RuntimeError here, so
the API answers 500 and logs the child's stderr).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import distill
from app.settings import Settings
from distill.errors import EXIT_OK, EXIT_USER_ERROR, UserError

log = logging.getLogger(__name__)

# Where `import distill` resolves from: the child runs in an empty folder, so it is put on PYTHONPATH.
_SOURCE_ROOT = Path(distill.__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1
_BWRAP_CHECK = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--unshare-pid")


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
        hidden = [settings.upload_dir, settings.artifact_dir, settings.broker_dir]
        if settings.database_url.startswith("sqlite:///"):
            hidden.append(Path(settings.database_url.removeprefix("sqlite:///")).parent)
        return cls(
            timeout_seconds=settings.probe_timeout_seconds,
            cpu_seconds=settings.probe_cpu_seconds,
            memory_bytes=settings.probe_memory_mb * 1024 * 1024,
            output_bytes=settings.probe_output_mb * 1024 * 1024,
            sandbox=settings.probe_sandbox,
            hidden=tuple(hidden),
        )


def run_probe(args: Sequence[str], *, limits: ProbeLimits, inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Run `python -m distill ARGS` in the sandbox; return the JSON object it printed last.

    `inputs` are the files the child may read among the hidden folders (the upload it inspects). Raises
    UserError for an error event (exit 2), `probe_timeout` and `probe_limit_exceeded`; ProbeCrashed else.
    """
    with tempfile.TemporaryDirectory(prefix="distillery-probe-") as folder:
        work = Path(folder).resolve()
        command = [sys.executable, "-m", "distill", *args]
        if _use_bwrap(limits.sandbox):
            command = _bwrap(command, work=work, inputs=[Path(p).resolve() for p in inputs], hidden=limits.hidden)
        code, timed_out = _run(command, work=work, limits=limits)
        stdout = (work / "stdout").read_bytes()[: limits.output_bytes].decode("utf-8", errors="replace")
        stderr = (work / "stderr").read_bytes()[-8000:].decode("utf-8", errors="replace")
    if timed_out or code == -signal.SIGXCPU:
        raise UserError(
            f"the model did not finish within the probe's limits ({limits.timeout_seconds:g} s wall clock, "
            f"{limits.cpu_seconds} s CPU); try a smaller input_shape",
            code="probe_timeout",
        )
    if code < 0:
        raise UserError(
            f"running the model was stopped by {signal.Signals(-code).name} (the probe may use at most "
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
    with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
        process = subprocess.Popen(
            command,
            cwd=work,
            env=_environment(work),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: the timeout kills everything it started
            preexec_fn=_limiter(limits),
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


def _limiter(limits: ProbeLimits) -> Callable[[], None]:
    """preexec_fn: the rlimits (inherited by bubblewrap's child), and death with the API process."""
    memory, cpu, output = limits.memory_bytes, limits.cpu_seconds, limits.output_bytes

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at the soft limit, SIGKILL after
        resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with contextlib.suppress(Exception):  # SIGKILL when the API process dies (Linux)
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return apply


def _environment(work: Path) -> dict[str, str]:
    """Only what Python and torch need: none of the service's DISTILLERY_* settings reach the model."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "TMPDIR": str(work),
        "PYTHONPATH": str(_SOURCE_ROOT),
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


def _bwrap(command: list[str], *, work: Path, inputs: Sequence[Path], hidden: Sequence[Path]) -> list[str]:
    """`bwrap … -- command`: / read-only, no network, the hidden folders empty but for `inputs`, `work` writable."""
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    args = [bwrap, *_BWRAP_CHECK, "--unshare-ipc", "--die-with-parent"]
    for folder in _hideable(["/tmp", *hidden]):
        args += ["--tmpfs", str(folder)]
    for path in inputs:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(work), str(work), "--chdir", str(work), "--"]
    return args + command


def _hideable(folders: Sequence[str | Path]) -> list[Path]:
    """Existing folders that do not hold what the child itself needs (the interpreter, the engine's code)."""
    needed = [Path(sys.prefix).resolve(), Path(sys.executable).resolve(), _SOURCE_ROOT]
    out = []
    for folder in folders:
        path = Path(folder).resolve()
        if path.is_dir() and path != Path("/") and not any(n == path or path in n.parents for n in needed):
            out.append(path)
    return list(dict.fromkeys(out))


def _use_bwrap(mode: str) -> bool:
    if mode == "off":
        return False
    works = bwrap_works()
    if mode == "bwrap" and not works:
        raise ProbeCrashed("DISTILLERY_PROBE_SANDBOX=bwrap, but bubblewrap is not installed or cannot run here")
    return works


@lru_cache
def bwrap_works() -> bool:
    """bubblewrap is installed and may create namespaces here (containers often forbid it): checked once."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        log.warning("bubblewrap (bwrap) is not installed: probes run with rlimits only")
        return False
    try:
        done = subprocess.run([bwrap, *_BWRAP_CHECK, "--", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("bubblewrap cannot run here (%s): probes run with rlimits only", exc)
        return False
    if done.returncode != 0:
        log.warning("bubblewrap cannot run here (%s): probes run with rlimits only", done.stderr.decode().strip())
        return False
    return True
