"""The embedded mode as `make run` starts it: nothing but Python, SQLite and the filesystem broker.

`python -m worker.launch` runs in an empty folder with no DISTILLERY_* settings besides the port (and
fast heartbeats), so every default is exercised: ./var/distillery.db, ./var/broker, ./var/artifacts.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.client import walk_through
from tests.e2e.conftest import Digits
from tests.e2e.processes import free_port, service_env

pytestmark = pytest.mark.slow


def test_make_run_walk_through_and_ctrl_c(tmp_path: Path, digits: Digits) -> None:
    port = free_port()
    env = service_env(api_port=str(port), heartbeat_seconds="1", reconcile_interval_seconds="1", device="cpu")
    log = tmp_path / "launch.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "worker.launch"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )

    def logs() -> str:
        return log.read_text(errors="replace")[-8000:]

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert launcher.poll() is None and time.monotonic() < deadline, logs()
                time.sleep(0.2)
            assert http.get("/readyz").status_code == 200, http.get("/readyz").text
            job = walk_through(http, digits, logs=logs)
        # The README's `distillery demo` against the same server: trains a teacher, distills, downloads.
        demo_dir = tmp_path / "demo"
        demo_dir.mkdir()
        demo = subprocess.run(
            [sys.executable, "-m", "app.cli", "demo", "--url", f"http://127.0.0.1:{port}", "--epochs", "2"],
            cwd=demo_dir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr + logs()
        assert "student (distilled)" in demo.stdout and (demo_dir / "student.safetensors").stat().st_size > 0
        var = tmp_path / "var"
        assert (var / "distillery.db").is_file() and (var / "broker").is_dir()
        assert (var / "artifacts" / "jobs" / job["id"] / "student.safetensors").is_file()
    finally:
        # Ctrl-C: the launcher stops the worker and the API and exits cleanly.
        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            raise
    assert code == 0, logs()
    assert "Warm shutdown" in logs()
