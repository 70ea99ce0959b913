"""What the service benchmarks share: a fresh Postgres database, a flushed Redis db, a small teacher, the machine.

The processes themselves (uvicorn, the Celery worker) are started with tests/e2e/processes.py, the same
code the end-to-end tests use, so a benchmark measures the stack those tests check.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

POSTGRES_SERVER_URL = os.environ.get("DISTILLERY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_SERVER_URL = os.environ.get("DISTILLERY_BENCH_REDIS", "redis://127.0.0.1:6379")
SMALL_TEACHER_ARCH: dict[str, Any] = {"name": "mlp", "kwargs": {"hidden": [32]}}


def postgres_database(name: str) -> str:
    """Drop and recreate database `name`, migrate it to head, return its URL."""
    from sqlalchemy import create_engine, text

    from app.migrate import upgrade_to_head

    admin = create_engine(f"{POSTGRES_SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = f"{POSTGRES_SERVER_URL}/{name}"
    upgrade_to_head(url)
    return url


def redis_database(number: int) -> str:
    import redis

    url = f"{REDIS_SERVER_URL}/{number}"
    redis.Redis.from_url(url).flushdb()
    return url


def small_teacher(folder: Path) -> Path:
    """An mlp(hidden=[32]) for 8x8 digits with random weights (dispatch does not care what it knows)."""
    import torch
    from safetensors.torch import save_file

    from distill.config import ArchitectureSpec
    from distill.models import build_model

    torch.manual_seed(0)
    model = build_model(ArchitectureSpec(**SMALL_TEACHER_ARCH), input_shape=(1, 8, 8), num_classes=10)
    path = folder / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def bench_machine() -> dict[str, Any]:
    """`nproc`, the CPU model and the load when the run started (other work on the machine skews it)."""
    model = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
    }


def run_machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The `machine` block of a service benchmark's result: the hardware and software, when, at which commit,
    and the load average (1, 5, 15 min) before and after. The machine is shared: a high load means the
    figures measured what was left of it, so throughputs are lower bounds and latencies upper bounds."""
    from datetime import UTC, datetime

    from bench.common import machine

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=False).stdout
    return {
        **machine(),
        **bench_machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit + ("+uncommitted" if dirty.strip() else ""),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
