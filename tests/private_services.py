"""A private Postgres and a private Redis for tests that stop, kill and restart them.

The machine's shared services (Postgres on 5432, Redis on 6379) belong to everyone's tests and must never be
stopped. A fault test gets servers of its own instead, on free ports in a temporary folder, removed at the end:

- `PrivatePostgres`: a cluster made by `initdb`, run with `pg_ctl` (as the `postgres` OS user when the tests
  run as root, since Postgres refuses to run as root), listening on 127.0.0.1 only, with no durability
  (fsync off: the data is thrown away anyway);
- `PrivateRedis`: `redis-server --save '' --appendonly no`, so a restart really starts empty, as a Redis
  without persistence does in production.

`start_private_postgres` / `start_private_redis` raise `ServiceMissing` when the programs are not installed
or do not start; the fixtures turn that into a skip, or a failure under DISTILLERY_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.processes import free_port

POSTGRES_BIN = Path(os.environ.get("DISTILLERY_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # the OS user that runs the private cluster when the tests run as root
# Throwaway data: no fsync, no full-page writes; no Unix socket (its default folder may not be writable).
_PG_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=100"
)


class ServiceMissing(RuntimeError):
    """The private service cannot be started here (not installed, or it failed to start)."""


def _run(command: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceMissing(f"{command[0]}: {exc}") from exc


@dataclass
class PrivatePostgres:
    root: Path  # a temporary folder owned by the user that runs the server
    port: int
    as_user: list[str]  # `runuser -u postgres --` when running as root, else nothing

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def server_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def url(self, database: str) -> str:
        return f"{self.server_url}/{database}"

    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return _run([*self.as_user, str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), *args], timeout=timeout)

    def start(self, timeout: int = 30) -> None:
        """Start the server and wait until it accepts connections."""
        done = self._pg_ctl(
            "-l", str(self.log), "-w", "-t", str(timeout), "-o", f"-p {self.port} {_PG_OPTIONS}", "start"
        )
        if done.returncode != 0:
            raise ServiceMissing(f"pg_ctl start failed ({done.returncode}): {done.stderr}\n{self.output()}")

    def stop(self, mode: str = "fast", timeout: int = 30) -> None:
        """Stop it: `fast` disconnects every client (what a restart does); `immediate` is a crash."""
        done = self._pg_ctl("-m", mode, "-w", "-t", str(timeout), "stop")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed ({done.returncode}): {done.stderr}\n{self.output()}")

    def running(self) -> bool:
        return self._pg_ctl("status", timeout=10).returncode == 0

    def output(self, max_chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-max_chars:]
        return ""

    def close(self) -> None:
        """Stop the server (if it runs) and remove its folder."""
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_private_postgres() -> PrivatePostgres:
    """initdb a new cluster in a temporary folder and start it on a free port."""
    initdb = POSTGRES_BIN / "initdb"
    if not (initdb.is_file() and (POSTGRES_BIN / "pg_ctl").is_file()):
        raise ServiceMissing(f"initdb/pg_ctl not found in {POSTGRES_BIN} (set DISTILLERY_TEST_POSTGRES_BIN)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="distillery-pg-"))
    try:
        if os.geteuid() == 0:  # Postgres will not run as root
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServiceMissing("running as root and runuser is not installed: cannot run Postgres")
            as_user = [runuser, "-u", PG_USER, "--"]
            try:
                shutil.chown(root, PG_USER, PG_USER)
            except (LookupError, OSError) as exc:
                raise ServiceMissing(f"no OS user {PG_USER!r} to run Postgres as: {exc}") from exc
        done = _run(
            [*as_user, str(initdb), "-D", str(root / "data"), "-U", "postgres", "-A", "trust"]
            + ["-E", "UTF8", "--locale=C", "--no-sync"],
            timeout=120,
        )
        if done.returncode != 0:
            raise ServiceMissing(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        server = PrivatePostgres(root, free_port(), as_user)
        server.start()
        return server
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


@dataclass
class PrivateRedis:
    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 20.0) -> None:
        """Start redis-server (empty: no RDB, no AOF) and wait until it answers PING."""
        import redis

        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise ServiceMissing("redis-server is not installed")
        command = [redis_server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.root), "--daemonize", "no"]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.starts += 1
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except redis.RedisError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise ServiceMissing(f"redis-server did not start: {exc}\n{self.output()}") from exc
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        """SIGKILL: whatever it held in memory (queued messages) is gone."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def restart_empty(self) -> None:
        self.kill()
        self.start()

    def output(self, max_chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-max_chars:]
        return ""

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def start_private_redis() -> PrivateRedis:
    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="distillery-redis-")), free_port())
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
