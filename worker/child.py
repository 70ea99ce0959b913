"""The training subprocess: start it, read its stdout without blocking the supervisor, stop it.

Why a child process and not a thread: a fresh CUDA context per job, DataLoader workers that are real
processes, and a hard kill that always works. The child gets its own session (process group) so that a
Ctrl-C meant for the worker does not reach it directly: the supervisor decides how it stops (SIGTERM, so
it writes a checkpoint; SIGKILL to the whole group after a grace period). On Linux it also dies with its
parent (PR_SET_PDEATHSIG), so a worker killed with SIGKILL leaves no orphan training on the GPU.
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
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies (Linux; a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A running `python -m distill run …`; `lines` yields its stdout lines, then None at EOF."""

    def __init__(self, command: Sequence[str], *, stderr_path: Path, cwd: Path | None = None) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
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
                os.kill(self.pid, signal.SIGTERM)
            self._terminated_at = time.monotonic()

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
        code = self.process.wait()
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
