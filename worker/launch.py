"""`make run` / `python -m worker.launch`: migrate, then run the API and one worker in the foreground.

With no environment this is the embedded mode (SQLite file, filesystem broker, folders under ./var); with
DISTILLERY_DATABASE_URL=postgresql+psycopg://… and DISTILLERY_BROKER_URL=redis://… the same command runs on
Postgres and Redis. Ctrl-C (or SIGTERM) stops both cleanly: the worker stops its running job at a
checkpoint and gives it back to the queue, so the next start resumes it. A second Ctrl-C kills both.

The children get sessions of their own, so the terminal's Ctrl-C reaches only this launcher, which then
signals each child exactly once, in the order that loses nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from sqlalchemy.engine import make_url

from app.migrate import upgrade_to_head
from worker.child import die_with_parent
from worker.settings import WorkerSettings, get_worker_settings

log = logging.getLogger("distillery.launch")


def api_command(settings: WorkerSettings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        settings.api_host,
        "--port",
        str(settings.api_port),
    ]


def worker_command(settings: WorkerSettings, *extra: str) -> list[str]:
    """`celery worker` as `make run` starts it; `extra` options go last (tests name their workers)."""
    # One job at a time per worker (one worker per device): --pool=solo runs the task in the main
    # process, so the supervisor can hold the training child and hear the shutdown signal.
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        settings.train_queue,
        "--without-mingle",
        "--without-gossip",
        "-l",
        "info",
        *extra,
    ]


def _public(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


class Launcher:
    def __init__(self, settings: WorkerSettings, *, api: bool = True, worker: bool = True) -> None:
        self.settings = settings
        self.want = {"api": api, "worker": worker}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.signals = 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            log.info(
                "%s: stopping (the running job, if any, checkpoints and goes back to the queue)",
                signal.Signals(signum).name,
            )
        else:
            log.warning("second signal: killing the API and the worker")
            for child in self.children.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)

    def run(self) -> int:
        settings = self.settings
        settings.ensure_dirs()
        log.info("database %s: migrating to the latest schema", _public(settings.database_url))
        upgrade_to_head(settings.database_url)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        commands = {"api": api_command(settings), "worker": worker_command(settings)}
        for name, command in commands.items():
            if self.want[name]:
                self.children[name] = subprocess.Popen(
                    command,
                    start_new_session=True,
                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
                )
        if self.want["api"]:
            log.info("API on http://%s:%s (docs at /docs)", settings.api_host, settings.api_port)
        log.info(
            "broker %s, queue %r, artifacts in %s",
            _public(settings.broker_url),
            settings.train_queue,
            settings.artifact_dir,
        )
        return self._watch()

    def _watch(self) -> int:
        exit_code = 0
        while self.signals == 0:
            for name, child in self.children.items():
                code = child.poll()
                if code is not None:
                    log.error("the %s exited with code %s: stopping the rest", name, code)
                    exit_code = code or 1
                    break
            else:
                time.sleep(0.2)
                continue
            break
        self._stop_all()
        return exit_code

    def _stop_all(self) -> None:
        # The worker first: it may need the grace period to checkpoint its job; the API stops at once.
        for name in ("worker", "api"):
            child = self.children.get(name)
            if child is not None and child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.cancel_grace_seconds + 15
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("the %s did not stop in time: killing it", name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-api", action="store_true", help="run only the worker")
    parser.add_argument("--no-worker", action="store_true", help="run only the API")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/launch] %(message)s")
    launcher = Launcher(get_worker_settings(), api=not args.no_api, worker=not args.no_worker)
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
