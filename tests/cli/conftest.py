"""The stack the CLI and client tests play against: the e2e `pg_stack`, on a database and Redis db of its own.

The e2e fixture recreates `distillery_e2e` and flushes Redis db 13 when it starts; built from the same parts
(tests/e2e/conftest.py, tests/e2e/processes.py) on `distillery_cli` and db 12, these tests can run while
the e2e modules run, without either wiping the other's stack. One stack serves both files (session scope).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Stack, running_stack
from tests.e2e.conftest import digits as digits  # noqa: F401  (the fixture, shared with the e2e tests)
from tests.e2e.processes import REPO

CLI_DATABASE = "distillery_cli"
CLI_REDIS_DB = 12


@pytest.fixture(scope="session")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(CLI_DATABASE, CLI_REDIS_DB, tmp_path_factory.mktemp("cli_stack")) as stack:
        yield stack


def client_env(url: str, key: str | None) -> dict[str, str]:
    """What a user's shell has: no DISTILLERY_* of the developer's, the API's URL and key in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env["DISTILLERY_URL"] = url
    if key is not None:
        env["DISTILLERY_API_KEY"] = key
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: str | os.PathLike[str] = REPO, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """`distillery ARGS…` as a real process (`python -m distillery.cli`)."""
    return subprocess.run(
        [sys.executable, "-m", "distillery.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
