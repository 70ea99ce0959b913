"""The training subprocess: start it, read its stdout without blocking the supervisor, stop it.

Why a child process and not a thread: a fresh CUDA context per job, DataLoader workers that are real
processes, and a hard kill that always works. The child gets its own session (process group) so that a
Ctrl-C meant for the worker does not reach it directly: the supervisor decides how it stops (SIGTERM, so
it writes a checkpoint; SIGKILL to the whole group after a grace period). On Linux it also dies with its
parent (PR_SET_PDEATHSIG), so a worker killed with SIGKILL leaves no orphan training on the GPU.

It runs in the sandbox of app/sandbox.py (`Sandbox`): rlimits always (memory, CPU seconds, no core dumps)
and, where bubblewrap works, no network, a read-only root, the service's data folders hidden but for the
job's own input files, and write access only to its job folder. Under bubblewrap the engine is a
grandchild: signals meant for it go to its own pid, and its exit by signal N arrives as 128 + N —
`returncode` undoes that, so the supervisor reads the same codes either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app import sandbox

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies (Linux; a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Sandbox:
    """How the training child is confined (WorkerSettings.train_* and the job's own files)."""

    mode: str = "off"  # auto | bwrap | off (Settings.probe_sandbox: one switch for every model sandbox)
    work: Path | None = None  # the job folder: the only place it may write
    inputs: tuple[Path, ...] = ()  # the job's uploads: the only files of the hidden folders it may read
    hidden: tuple[Path, ...] = ()  # the service's data folders
    cpu_seconds: int | None = None
    memory_bytes: int | None = None
    gpu: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


class Child:
    """A running `python -m distill run …`; `lines` yields its stdout lines, then None at EOF."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        stderr_path: Path,
        cwd: Path | None = None,
        confine: Sandbox | None = None,
    ) -> None:
        confine = confine or Sandbox()
        env = sandbox.clean_environment({"PYTHONUNBUFFERED": "1", **confine.extra_env})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(sandbox.SOURCE_ROOT), env.get("PYTHONPATH")]))
        self.sandboxed = confine.work is not None and sandbox.use_bwrap(confine.mode)
        argv = list(command)
        if self.sandboxed:
            assert confine.work is not None
            argv = sandbox.bwrap_command(
                argv, work=confine.work, inputs=confine.inputs, hidden=confine.hidden, gpu=confine.gpu
            )
            cwd = confine.work
        limits = sandbox.Rlimits(
            cpu_seconds=confine.cpu_seconds,
            memory_bytes=confine.memory_bytes,
            file_bytes=None,
            death_signal=signal.SIGTERM,
        )
        with open(stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=sandbox.preexec(limits) if sys.platform.startswith("linux") else None,
            )
        self.pid = self.process.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._terminated_at: float | None = None
        self._reader = threading.Thread(target=self._read, name=f"child-{self.pid}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for raw in self.process.stdout:
                self.lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        finally:
            self.lines.put(None)

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        """Ask the run to stop: the engine finishes its step, writes a checkpoint and exits 3. Only the
        main process is signalled; its DataLoader workers are its own business until the hard kill."""
        if self._terminated_at is None and self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.engine_pid(), signal.SIGTERM)
            self._terminated_at = time.monotonic()

    def engine_pid(self) -> int:
        """The engine's own process (under bubblewrap's two; the child itself when not sandboxed)."""
        return sandbox.sandboxed_pid(self.pid, sandboxed=self.sandboxed)

    @property
    def terminating(self) -> bool:
        return self._terminated_at is not None

    def kill_if_overdue(self, grace_seconds: float) -> bool:
        """SIGKILL the group once the grace period after terminate() has passed; True if it did."""
        if self._terminated_at is None or self.poll() is not None:
            return False
        if time.monotonic() - self._terminated_at < grace_seconds:
            return False
        log.warning("training process %s ignored SIGTERM for %.0fs: killing it", self.pid, grace_seconds)
        self.kill()
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group (the run and whatever it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        """The engine's exit code: 0-3 as distill/errors.py says, -N when killed by signal N."""
        code = self.process.wait()
        killed_by = sandbox.exit_signal(code, sandboxed=self.sandboxed)
        code = code if killed_by is None else -killed_by
        # Reap leftovers of the group (e.g. DataLoader workers of a crashed run).
        self.kill()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def tail(path: Path, max_bytes: int = 8000) -> str:
    """The last `max_bytes` of a log file (where a crashed run's traceback is)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
