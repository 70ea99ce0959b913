"""The `distillery` command as a user runs it — a real process (`python -m distillery.cli`) against the real
stack: submit a YAML naming local files, follow, list, read logs, download, cancel; errors as exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from distillery.cli.spec import LocalFile, SpecError, upload_local_files
from distillery.client import Client
from distillery.models import File
from tests.cli.conftest import client_env, run_cli
from tests.e2e.client import STUDENT_ARCH
from tests.e2e.conftest import TEACHER_ARCH, Digits, Stack
from tests.e2e.processes import REPO, free_port

pytestmark = pytest.mark.slow


def write_spec(folder: Path, digits: Digits, *, epochs: int, batch_size: int = 64) -> Path:
    """job.yaml beside copies of the user's files, naming them by relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in ((digits.teacher, "teacher.safetensors"), (digits.train, "train.npz")):
        shutil.copy(source, folder / name)
    (folder / "data").mkdir(exist_ok=True)
    shutil.copy(digits.validation, folder / "data" / "validation.npz")
    spec = {
        "teacher": {"file": "teacher.safetensors", "architecture": TEACHER_ARCH},
        "student": {"architecture": STUDENT_ARCH},
        "dataset": {"train": "./train.npz", "validation": "data/validation.npz"},
        "knowledge": {"type": "response", "temperature": 4.0, "lambda": 0.5},
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": 0.01, "seed": 0},
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_submit_wait_list_status_logs_download(pg_stack: Stack, digits: Digits, tmp_path: Path) -> None:
    env = client_env(pg_stack.url, pg_stack.key)
    spec = write_spec(tmp_path / "project", digits, epochs=1)
    # Run from another folder: the spec's relative paths are its own folder's.
    done = run_cli("--json", "submit", str(spec), "--wait", "--timeout", "180", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr + pg_stack.logs()
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["progress"]["fraction"] == 1.0
    assert job["spec"]["teacher"]["file_id"].startswith("file_") and "file" not in job["spec"]["teacher"]
    assert job["spec"]["dataset"]["train"] != job["spec"]["dataset"]["validation"]
    assert done.stderr.count("uploaded ") == 3 and f"{job['id']} succeeded (100%)" in done.stderr
    job_id = job["id"]

    listed = run_cli("list", "--status", "succeeded", "--json", env=env)  # --json after the command too
    assert listed.returncode == 0 and job_id in {j["id"] for j in json.loads(listed.stdout)}
    table = run_cli("list", "--limit", "1", env=env)
    assert table.returncode == 0 and job_id in table.stdout and "succeeded" in table.stdout

    status = run_cli("status", job_id, env=env)
    assert status.returncode == 0 and status.stdout.startswith(f"{job_id}  succeeded  100%")
    assert "student/top1" in status.stdout and "student.safetensors" in status.stdout
    watched = run_cli("status", job_id, "--watch", env=env)  # already over: one look, exit 0
    assert watched.returncode == 0, watched.stderr

    logs = run_cli("logs", job_id, env=env)
    assert logs.returncode == 0 and logs.stdout.splitlines()[-1].split()[3] == "succeeded"
    followed = run_cli("--json", "logs", job_id, "--follow", env=env)  # a finished job: its log, then the end
    assert [json.loads(line)["type"] for line in followed.stdout.splitlines()][-1] == "succeeded"

    out = tmp_path / "downloads"
    fetched = run_cli("--json", "download", job_id, "--dir", str(out), env=env)
    assert fetched.returncode == 0, fetched.stderr
    with Client(pg_stack.url, pg_stack.key) as client:
        artifacts = {a.name: a for a in client.list_artifacts(job_id)}
    assert {w["name"] for w in json.loads(fetched.stdout)} == set(artifacts)
    for name, artifact in artifacts.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == artifact.sha256, name
    one = run_cli("download", job_id, "--dir", str(tmp_path / "one"), "--name", "student.onnx", env=env)
    assert one.returncode == 0 and [p.name for p in (tmp_path / "one").iterdir()] == ["student.onnx"]
    missing = run_cli("download", job_id, "--name", "nope.bin", env=env)
    assert missing.returncode == 2 and "no artifact nope.bin" in missing.stderr


def test_cancel_a_running_job(pg_stack: Stack, digits: Digits, tmp_path: Path) -> None:
    env = client_env(pg_stack.url, pg_stack.key)
    submitted = run_cli("submit", str(write_spec(tmp_path, digits, epochs=300, batch_size=16)), env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.startswith("job_")
    follower = subprocess.Popen(
        [sys.executable, "-m", "distillery.cli", "logs", job_id, "--follow"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Client(pg_stack.url, pg_stack.key) as client:
            deadline = time.monotonic() + 120
            while not client.get_job(job_id).progress.step:
                assert time.monotonic() < deadline, pg_stack.logs()
                time.sleep(0.2)
        cancelled = run_cli("cancel", job_id, "--wait", "--timeout", "60", env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.strip() == f"{job_id} cancelled"
        # `logs --follow` ends by itself once the job has.
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    types = [line.split()[3] for line in out.splitlines()]
    assert types[0] == "queued" and "cancel_requested" in types and types[-1] == "cancelled"

    watched = run_cli("status", job_id, "--watch", env=env)
    assert watched.returncode == 1 and f"job {job_id} cancelled" in watched.stderr


def test_bad_spec_and_missing_files_are_usage_errors(pg_stack: Stack, tmp_path: Path) -> None:
    env = client_env(pg_stack.url, pg_stack.key)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "mode": "self",
                "self": {"method": "heads"},
                "student": {"architecture": {"name": "mlp"}},
                "dataset": {"train": "builtin:digits"},
                "training": {"epochs": 0},
            }
        )
    )
    refused = run_cli("submit", str(bad), env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: training.epochs: ") and "[invalid_request]" in refused.stderr
    assert "Traceback" not in refused.stderr

    no_file = tmp_path / "missing.yaml"
    no_file.write_text("student: {architecture: {name: mlp}}\ndataset: {train: ./nowhere/train.npz}\n")
    missing = run_cli("submit", str(no_file), env=env)
    assert missing.returncode == 2 and "dataset.train: no such file" in missing.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("teacher: [unclosed\n")
    assert run_cli("submit", str(broken), env=env).returncode == 2
    assert run_cli("submit", env=env).returncode == 2  # no spec at all: click's usage error


def test_wrong_key_and_no_service(pg_stack: Stack) -> None:
    wrong = run_cli("--api-key", "dk_live_wrong", "list", env=client_env(pg_stack.url, None))
    assert wrong.returncode == 2 and wrong.stderr == "error: the API key is not valid [unauthorized]\n"
    from_env = run_cli("status", "job_x", env=client_env(pg_stack.url, "dk_live_wrong"))
    assert from_env.returncode == 2 and "the API key is not valid" in from_env.stderr
    away = run_cli("list", env=client_env(f"http://127.0.0.1:{free_port()}", "k"))
    assert away.returncode == 3 and away.stderr.startswith("error: cannot reach http://127.0.0.1:")


def test_service_commands_still_run_here(pg_stack: Stack) -> None:
    keys = run_cli("keys", "list", "--json", env=pg_stack.env)
    assert keys.returncode == 0, keys.stderr
    assert {row["tenant"] for row in json.loads(keys.stdout)} == {"e2e"}
    tenants = run_cli("--json", "tenants", "list", env=pg_stack.env)
    assert tenants.returncode == 0 and json.loads(tenants.stdout)[0]["max_concurrent_jobs"] == 32
    help_text = run_cli("--help", env=pg_stack.env).stdout
    assert "Exit codes" in help_text and "DISTILLERY_API_KEY" in help_text


def test_which_spec_values_are_uploaded(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    for name in ("models/teacher.pt", "train.npz"):
        (tmp_path / name).write_bytes(b"x")
    sent: list[LocalFile] = []

    def upload(local: LocalFile) -> File:
        sent.append(local)
        now = datetime.now(UTC)
        return File(
            id=f"file_{len(sent)}", purpose=local.purpose, filename="f", bytes=1, sha256="", format="", created_at=now
        )

    spec = {
        "teacher": {"path": "models/teacher.pt", "architecture": {"name": "mlp"}},
        "student": {"file_id": "file_kept"},
        "dataset": {"train": "train.npz", "validation": "./train.npz"},
    }
    upload_local_files(spec, tmp_path, upload)
    assert spec["teacher"] == {"file_id": "file_1", "architecture": {"name": "mlp"}}
    assert spec["student"] == {"file_id": "file_kept"}
    assert spec["dataset"] == {"train": "file_2", "validation": "file_2"}  # one file, uploaded once
    assert [(f.field, f.purpose, f.path) for f in sent] == [
        ("teacher.path", "teacher", tmp_path / "models" / "teacher.pt"),
        ("dataset.train", "dataset", tmp_path / "train.npz"),
    ]

    sent.clear()
    typo = {"teacher": {"file": "models/teacher.pt"}, "dataset": {"train": "builtin:digits", "validation": "val.npz"}}
    with pytest.raises(SpecError, match=r"dataset.validation: no such file: .*val.npz"):
        upload_local_files(typo, tmp_path, upload)
    assert sent == [] and typo["teacher"] == {"file": "models/teacher.pt"}  # nothing uploaded, nothing changed
