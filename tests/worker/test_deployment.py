"""docker-compose.yml and the launcher describe the same deployment, with settings that exist.

No container engine runs here; the compose CLI (when installed) still validates the file, and the checks
below catch what it cannot: a misspelt DISTILLERY_* variable is silently ignored by pydantic-settings.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import services_required
from worker.launch import api_command, worker_command
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_services_and_their_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrations", "api", "worker"}
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrations"]["condition"] == "service_completed_successfully"
    assert services["migrations"]["command"] == ["distillery", "migrate"]


def test_every_distillery_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = set(WorkerSettings.model_fields)
    for name, service in compose["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith("DISTILLERY_"):
                assert key.removeprefix("DISTILLERY_").lower() in fields, f"{name}: {key} is not a setting"


def test_the_api_and_workers_run_with_auth_required(compose: dict[str, Any]) -> None:
    for name in ("api", "worker", "migrations"):
        assert compose["services"][name]["environment"]["DISTILLERY_AUTH"] == "required", name


def test_the_worker_runs_like_make_run_and_reserves_a_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    launched = worker_command(WorkerSettings())
    assert worker["command"] == launched[launched.index("celery") :]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["environment"]["DISTILLERY_DEVICE"] == "cuda"
    # The supervisor needs the grace period to checkpoint and re-queue the job on `docker compose stop`.
    assert int(worker["stop_grace_period"].rstrip("s")) > WorkerSettings().cancel_grace_seconds
    api = compose["services"]["api"]
    assert api["command"][:3] == api_command(WorkerSettings())[2:5]  # uvicorn --factory app.main:create_app
    # Uploads written by the API are read by the workers; artifacts the other way round.
    assert "data:/data" in api["volumes"] and "data:/data" in worker["volumes"]


def test_the_compose_cli_accepts_the_file() -> None:
    if shutil.which("docker-compose"):
        command = ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"]
    elif (
        shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"]
    elif services_required():
        pytest.fail("no docker compose CLI installed (.ci/run installs Debian's docker-compose)")
    else:
        pytest.skip("no docker compose CLI installed")
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
