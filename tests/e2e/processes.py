"""Start and stop the real service processes the way an operator does: uvicorn and a Celery worker.

Each process gets its own environment (DISTILLERY_* pointing at the test's database, broker and folders)
and writes its output to a log file, which a failing test prints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from worker.launch import worker_command
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""  # the API's base URL

    def output(self, max_chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-max_chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a warm shutdown), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(**distillery: str) -> dict[str, str]:
    """This environment without any DISTILLERY_* a developer may have set, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update({f"DISTILLERY_{k.upper()}": v for k, v in distillery.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(name: str, command: list[str], env: Mapping[str, str], log_dir: Path) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Service(name, process, log)


def _wait(service: Service, ready: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ready not in service.output(max_chars=1_000_000):
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{service.output()}")
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"{service.name} not ready after {timeout:.0f}s:\n{service.output()}")
        time.sleep(0.1)


def start_worker(env: Mapping[str, str], log_dir: Path, *, timeout: float = 90.0) -> Service:
    """One Celery worker as `make run` starts it: solo pool, one job at a time, the train queue."""
    settings = WorkerSettings(train_queue=env.get("DISTILLERY_TRAIN_QUEUE", "train"))
    command = worker_command(settings, "--without-heartbeat", "-n", f"test-{uuid.uuid4().hex[:8]}@%h")
    service = _start("worker", command, env, log_dir)
    _wait(service, " ready.", timeout)
    return service


def start_api(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    port: int | None = None,
    target: Sequence[str] = ("--factory", "app.main:create_app"),
    extra_args: Sequence[str] = ("--log-level", "warning"),
    timeout: float = 90.0,
) -> Service:
    """uvicorn serving `target` on 127.0.0.1:`port` (a free one by default); waits for /healthz."""
    port = port or free_port()
    command = [sys.executable, "-m", "uvicorn", *target, "--host", "127.0.0.1", "--port", str(port), *extra_args]
    service = _start(f"api-{port}", command, env, log_dir)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if service.process.poll() is not None or time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"api not ready on port {port}:\n{service.output()}")
        time.sleep(0.1)
    service.url = f"http://127.0.0.1:{port}"
    return service
