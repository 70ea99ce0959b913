"""The one sandbox for code that runs an uploaded model: the API's probe (app/probe.py) and the worker's
training child (worker/child.py) build their command lines and limits here.

What a sandboxed child gets (DESIGN §2, Untrusted models):
- rlimits, always: address space (memory), CPU seconds, file size, no core dumps; death with its parent;
- bubblewrap where the host allows it (`mode` auto | bwrap | off): the filesystem read-only, no network,
  its own PID and IPC namespaces, /tmp and the service's data folders (uploads, artifacts, broker,
  database) hidden except for the child's own input files, write access only to its own folder;
- an environment without the service's settings (no database URL or other secrets).

bubblewrap runs the command as a grandchild (bwrap → bwrap, PID 1 of the namespace → command) and exits
with 128 + N when the command was killed by signal N: `exit_signal` and `sandboxed_pid` undo both.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import distill

log = logging.getLogger(__name__)

# Where `import distill` resolves from: a child that runs in another folder gets it on PYTHONPATH.
SOURCE_ROOT = Path(distill.__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1
_BWRAP_CHECK = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--unshare-pid")
_GPU_DEVICES = ("/dev/nvidia*", "/dev/dri")


@dataclass(frozen=True)
class Rlimits:
    cpu_seconds: int | None  # SIGXCPU at the limit, SIGKILL a second later; None: unlimited
    memory_bytes: int | None  # RLIMIT_AS; None where CUDA needs its address space
    file_bytes: int | None  # RLIMIT_FSIZE: the largest file it may write; None: unlimited
    death_signal: int = signal.SIGKILL  # sent to the child when its parent dies


def preexec(limits: Rlimits) -> Callable[[], None]:
    """preexec_fn: the rlimits (inherited by bubblewrap's children), and death with the parent (Linux)."""

    def apply() -> None:
        for which, value in (
            (resource.RLIMIT_AS, limits.memory_bytes),
            (resource.RLIMIT_FSIZE, limits.file_bytes),
        ):
            if value is not None:
                resource.setrlimit(which, (value, value))
        if limits.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, limits.death_signal)

    return apply


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any DISTILLERY_* setting (the database URL, ...), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(extra or {})
    return env


def bwrap_command(
    command: Sequence[str],
    *,
    work: Path,
    inputs: Sequence[Path] = (),
    hidden: Sequence[Path] = (),
    gpu: bool = False,
) -> list[str]:
    """`bwrap … -- command`: / read-only, no network, /tmp and `hidden` empty but for `inputs`, `work` writable."""
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    args = [bwrap, *_BWRAP_CHECK, "--unshare-ipc", "--die-with-parent"]
    if gpu:
        for pattern in _GPU_DEVICES:
            for device in sorted(Path("/dev").glob(pattern.removeprefix("/dev/"))):
                args += ["--dev-bind", str(device), str(device)]
    work = work.resolve()
    for folder in hideable(["/tmp", *hidden]):
        args += ["--tmpfs", str(folder)]
    for path in dict.fromkeys(Path(p).resolve() for p in inputs):
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(work), str(work), "--chdir", str(work), "--"]
    return args + list(command)


def hideable(folders: Sequence[str | Path]) -> list[Path]:
    """Existing folders that do not hold what the child needs (the interpreter, the engine's code).

    A folder above the child's own is hidden too: bubblewrap binds the child's folder (and its inputs) back
    into the empty tmpfs afterwards, creating the mount points.
    """
    needed = [Path(sys.prefix).resolve(), Path(sys.executable).resolve(), SOURCE_ROOT]
    out = []
    for folder in folders:
        path = Path(folder).resolve()
        if path.is_dir() and path != Path("/") and not any(n == path or path in n.parents for n in needed):
            out.append(path)
    return list(dict.fromkeys(out))


def use_bwrap(mode: str) -> bool:
    """mode auto: bubblewrap where it works; bwrap: required (RuntimeError if it cannot run); off: never."""
    if mode == "off":
        return False
    works = bwrap_works()
    if mode == "bwrap" and not works:
        raise RuntimeError("the sandbox mode is 'bwrap', but bubblewrap is not installed or cannot run here")
    return works


@lru_cache
def bwrap_works() -> bool:
    """bubblewrap is installed and may create namespaces here (containers often forbid it): checked once."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        log.warning("bubblewrap (bwrap) is not installed: models run with rlimits only")
        return False
    try:
        done = subprocess.run([bwrap, *_BWRAP_CHECK, "--", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("bubblewrap cannot run here (%s): models run with rlimits only", exc)
        return False
    if done.returncode != 0:
        log.warning("bubblewrap cannot run here (%s): models run with rlimits only", done.stderr.decode().strip())
        return False
    return True


def exit_signal(code: int, *, sandboxed: bool) -> int | None:
    """The signal that killed the command, or None: Popen's -N, or bubblewrap's 128 + N."""
    if code < 0:
        return -code
    if sandboxed and 128 < code < 128 + 65:
        return code - 128
    return None


def sandboxed_pid(pid: int, *, sandboxed: bool) -> int:
    """The command's own pid under bubblewrap's two processes (itself when not sandboxed, or not started yet).

    Signals meant for the command (SIGTERM: checkpoint and stop) go there: bubblewrap does not forward them,
    and killing it would SIGKILL the command (--die-with-parent) before it could checkpoint.
    """
    current = pid
    while sandboxed and _comm(current) == "bwrap":
        children = _children(current)
        if not children:
            return pid
        current = children[0]
    return current


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
