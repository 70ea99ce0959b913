"""End-to-end fixtures: real data and a real teacher, and the whole stack as separate processes.

- `digits`: the 8x8 digits split into a train and a validation .npz, and an MLP teacher trained on the
  train part here (a second or two), saved as safetensors — what a user would upload.
- `pg_stack`: uvicorn + a Celery worker on Postgres (database `distillery_e2e`, recreated per session) and
  Redis (db 13), with fast heartbeats and reconciler rounds so the tests stay short.
The embedded stack (SQLite + the filesystem broker, started by `python -m worker.launch`) is built inside
its own test, since starting it is what that test checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import POSTGRES_SERVER_URL, create_database, drop_database, require_service
from tests.e2e.processes import REPO, Service, service_env, start_api, start_worker

E2E_DATABASE = "distillery_e2e"
E2E_REDIS_DB = 13
TEACHER_ARCH: dict[str, Any] = {"name": "mlp", "kwargs": {"hidden": [64]}}


@dataclass(frozen=True)
class Digits:
    teacher: Path  # safetensors of an mlp(hidden=[64]) for (1, 8, 8) inputs, 10 classes
    train: Path  # npz x (N, 1, 8, 8) float32, y (N,) int64
    validation: Path
    val_x: np.ndarray
    val_y: np.ndarray


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    from distill.config import ArchitectureSpec
    from distill.models import build_model

    folder = tmp_path_factory.mktemp("digits")
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train_idx, val_idx = order[:1400], order[1400:]
    np.savez(folder / "train.npz", x=x[train_idx], y=y[train_idx])
    np.savez(folder / "validation.npz", x=x[val_idx], y=y[val_idx])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = build_model(ArchitectureSpec(**TEACHER_ARCH), input_shape=(1, 8, 8), num_classes=10)
        optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx])
        for _ in range(150):  # full-batch steps: ~97% validation accuracy in about a second
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(teacher(xt), yt).backward()
            optimizer.step()
    path = folder / "teacher.safetensors"
    save_file({k: v.detach().contiguous() for k, v in teacher.state_dict().items()}, str(path))
    return Digits(path, folder / "train.npz", folder / "validation.npz", x[val_idx], y[val_idx])


@dataclass
class Stack:
    api: Service
    worker: Service
    env: dict[str, str]
    key: str  # an API key of tenant `e2e`: the stack runs with auth required, as production does

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def url(self) -> str:
        return self.api.url

    def logs(self) -> str:
        return f"--- api\n{self.api.output()}\n--- worker\n{self.worker.output()}"


def stack_env(database_url: str, broker_url: str, root: Path) -> dict[str, str]:
    return service_env(
        database_url=database_url,
        broker_url=broker_url,
        artifact_dir=str(root / "artifacts"),
        upload_dir=str(root / "files"),
        broker_dir=str(root / "broker"),
        device="cpu",
        heartbeat_seconds="1",
        lease_seconds="10",
        reconcile_interval_seconds="1",
        cancel_poll_seconds="0.2",
    )


def operator(env: dict[str, str], *args: str) -> str:
    """`distillery ARGS…` as an operator runs it against the stack's database; its stdout."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def create_key(env: dict[str, str], tenant: str) -> str:
    """`distillery keys create --tenant TENANT --json`; the tenant may have up to 32 jobs queued at once
    (the e2e modules submit a dozen tiny jobs together; the default limit, 4, is tested in tests/api)."""
    out = operator(env, "keys", "create", "--tenant", tenant, "--json")
    created = json.loads(out)
    assert set(created) == {"key", "prefix", "tenant"}, out
    operator(env, "tenants", "set", tenant, "--max-concurrent-jobs", "32")
    return str(created["key"])


@contextmanager
def running_stack(database: str, redis_db: int, root: Path, *, tenant: str = "e2e") -> Iterator[Stack]:
    """uvicorn + a Celery worker on a fresh Postgres database and a flushed Redis db, auth required, with an
    operator-made key of `tenant`. Modules that may run beside the e2e ones use a database and db of their own."""
    import httpx
    import redis

    from app.migrate import upgrade_to_head

    require_service("postgres")
    redis_url = require_service("redis").rsplit("/", 1)[0] + f"/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    drop_database(database)
    create_database(database)
    database_url = f"{POSTGRES_SERVER_URL}/{database}"
    upgrade_to_head(database_url)  # what `distillery migrate` / the compose migrations service does

    env = {**stack_env(database_url, redis_url, root), "DISTILLERY_AUTH": "required"}
    key = create_key(env, tenant)
    worker = start_worker(env, root / "logs")
    try:
        api = start_api(env, root / "logs")
    except Exception:
        worker.stop()
        raise
    stack = Stack(api, worker, env, key)
    anonymous = httpx.get(f"{api.url}/v1/jobs", timeout=10)  # auth is really on: no key, no jobs
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer", anonymous.text
    yield stack
    api.stop()
    assert worker.stop() == 0, stack.logs()


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(E2E_DATABASE, E2E_REDIS_DB, tmp_path_factory.mktemp("pg_stack")) as stack:
        yield stack
