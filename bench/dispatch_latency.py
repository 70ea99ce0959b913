"""How long does a submitted job wait before a worker starts it? (submit → status 'running')

The stack runs as in production on one machine: uvicorn and one idle Celery worker (solo pool) as
processes, Postgres and Redis (`--stack redis`, the default), or SQLite and the filesystem broker
(`--stack embedded`, what `make run` starts). N jobs are submitted one after another over HTTP, each once
the previous one has finished, so the worker is always idle when a job arrives. Two measures per job:
  db     started_at - created_at, both written by the service (the API's insert, the worker's claim);
         also created_at → dispatched_at: the send's time in the results recorded before 2026-12-06, 0 since
         (the API now writes dispatched_at with the row, and clears it only when the send fails).
  client from just before POST /v1/jobs to the first GET /v1/jobs/{id} (polled every 5 ms) that no
         longer says 'queued': what a user sees, including the HTTP round trips and the POST itself
         (reported alone too: submission validates the spec, which loads the teacher).
What runs in the job does not matter to this (the status turns 'running' at the claim, before the training
process starts), so by default the worker's engine is a stub that prints a result and exits
(`--engine real` runs the real engine: the same latency, minutes longer).

    python -m bench.dispatch_latency [--jobs 40] [--stack redis|embedded] [--engine stub|real]

Needs Postgres and Redis on their standard local ports for `--stack redis`. Writes
bench/results/dispatch_latency[_embedded].json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import write_result
from bench.services import SMALL_TEACHER_ARCH, bench_machine, postgres_database, redis_database, small_teacher
from tests.e2e.processes import service_env, start_api, start_worker

STUB_ENGINE = [
    sys.executable,
    "-c",
    "import json; print(json.dumps({'type': 'result', 'report': {}, 'artifacts': []}), flush=True)",
]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def submit_and_time(http: httpx.Client, body: dict[str, Any]) -> tuple[str, float, float]:
    """POST the job, poll until it is no longer queued; (job id, POST seconds, until-not-queued seconds)."""
    t0 = time.perf_counter()
    response = http.post("/v1/jobs", json=body)
    posted = time.perf_counter() - t0
    response.raise_for_status()
    job_id = response.json()["id"]
    while http.get(f"/v1/jobs/{job_id}").json()["status"] == "queued":
        time.sleep(0.005)
    return job_id, posted, time.perf_counter() - t0


def wait_finished(http: httpx.Client, job_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']}")
        time.sleep(0.05)
    return dict(job)


def db_timings(database_url: str, job_ids: list[str]) -> list[tuple[float, float]]:
    """(created → started, created → dispatched recorded) in seconds, per job."""
    from sqlalchemy import select

    from app.db import make_engine, make_sessionmaker
    from app.models import Job

    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        rows = session.execute(
            select(Job.id, Job.created_at, Job.dispatched_at, Job.started_at).where(Job.id.in_(job_ids))
        ).all()
    engine.dispose()
    out = []
    for row in rows:
        dispatched = row.dispatched_at or row.created_at
        out.append(((row.started_at - row.created_at).total_seconds(), (dispatched - row.created_at).total_seconds()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--stack", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--engine", choices=["stub", "real"], default="stub")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="distillery-bench-") as tmp:
        root = Path(tmp)
        if args.stack == "redis":
            database_url = postgres_database("distillery_bench")
            broker_url = redis_database(12)
        else:
            database_url = f"sqlite:///{root / 'distillery.db'}"
            broker_url = "filesystem://"
            from app.migrate import upgrade_to_head

            upgrade_to_head(database_url)
        settings = {
            "database_url": database_url,
            "broker_url": broker_url,
            "artifact_dir": str(root / "artifacts"),
            "upload_dir": str(root / "files"),
            "broker_dir": str(root / "broker"),
            "device": "cpu",
        }
        if args.engine == "stub":
            settings["engine_command"] = json.dumps(STUB_ENGINE)
        env = service_env(**settings)
        worker = start_worker(env, root / "logs")
        api = start_api(env, root / "logs")
        try:
            with httpx.Client(base_url=api.url, timeout=60) as http:
                with open(small_teacher(root), "rb") as f:
                    teacher = http.post("/v1/files", files={"file": ("t.safetensors", f)}, data={"purpose": "teacher"})
                teacher.raise_for_status()
                body = {
                    "teacher": {"file_id": teacher.json()["id"], "architecture": SMALL_TEACHER_ARCH},
                    "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
                    "dataset": {"train": "builtin:digits"},
                    "training": {"epochs": 1},
                }
                wait_finished(http, submit_and_time(http, body)[0])  # warm-up: imports, connections, caches
                job_ids, posts, client = [], [], []
                for _ in range(args.jobs):
                    job_id, posted, seconds = submit_and_time(http, body)
                    job_ids.append(job_id)
                    posts.append(posted)
                    client.append(seconds)
                    job = wait_finished(http, job_id)
                    assert job["status"] == "succeeded", job
        finally:
            api.stop()
            worker.stop()
        timings = db_timings(database_url, job_ids)

    result = {
        "stack": "Postgres + Redis" if args.stack == "redis" else "SQLite + filesystem broker (embedded)",
        "engine": args.engine,
        "jobs": args.jobs,
        "submit_to_running_db": summary([t[0] for t in timings]),
        "created_to_dispatched_db": summary([t[1] for t in timings]),
        "submit_to_running_client": summary(client),
        "post_response_client": summary(posts),
        "machine_extra": bench_machine(),
    }
    name = "dispatch_latency" if args.stack == "redis" else "dispatch_latency_embedded"
    path = write_result(name, result)
    print(f"\n{result['stack']}, {args.jobs} jobs, idle worker (results in {path})\n")
    print("| measure | p50 ms | p95 ms | mean ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for key, label in [
        ("submit_to_running_db", "submit → running (DB: started_at − created_at)"),
        ("created_to_dispatched_db", "created → dispatched_at (0: written with the row since 2026-12-06)"),
        ("submit_to_running_client", "submit → running (client: POST, then GET every 5 ms)"),
        ("post_response_client", "POST /v1/jobs response (validation loads the teacher)"),
    ]:
        s = result[key]
        print(f"| {label} | {s['p50_ms']} | {s['p95_ms']} | {s['mean_ms']} | {s['max_ms']} |")


if __name__ == "__main__":
    main()
