"""Bursts of submissions: 1,000 POST /v1/jobs from 32 clients at once, all 201, none lost, and how long each took.

The API runs as in production (uvicorn, one process, DISTILLERY_AUTH=required) on a scratch Postgres
database and a Redis broker (db 11); no worker consumes, so every accepted job's message must still be in the
queue at the end. The bench tenant's limit of live jobs is raised with the operator CLI (`distillery tenants
set`), its key made with `distillery keys create`. 32 clients (asyncio, one keep-alive connection each) take
submissions from a shared counter until the burst is done; each has its own Idempotency-Key. Two kinds:

  builtin  a registry student distilling itself on builtin:digits (mode self): nothing uploaded, so the
           engine's check runs in the API process (a probe slot's thread), no sandboxed child;
  probe    an uploaded teacher (an mlp for 8x8 digits) and a registry student: every submission runs the
           engine's check in a sandboxed `python -m distill check` child (app/probe.py), at most
           `probe_concurrency` (2) at once per API process.

Checked after each burst: every answer 201, one row per submission in `jobs` with dispatched_at set, one
message per job in the Redis queue. py-spy samples the API during the builtin burst (50 Hz, without pausing
it; its own CPU comes out of the same 2 cores), and its stacks are summed up by part of the request.

    python -m bench.submit_burst [--jobs 1000] [--clients 32] [--probe-jobs 32]

The probe burst is 32 submissions by default, one per client: each check is a fresh interpreter importing
torch and scikit-learn (~5 CPU-seconds here, two at a time), so 1,000 would take over an hour on 2 cores.
Needs Postgres and Redis on their standard local ports. Writes bench/results/submit_burst.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.services import SMALL_TEACHER_ARCH, postgres_database, redis_database, run_machine, small_teacher
from tests.e2e.processes import REPO, service_env, start_api

DATABASE = "distillery_burst"
REDIS_DB = 11
TENANT = "bench"
QUEUE = "train"
TARGET_P99_MS = 300.0
STUDENT = {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}}


def builtin_body() -> dict[str, Any]:
    return {"mode": "self", "student": STUDENT, "dataset": {"train": "builtin:digits"}, "training": {"epochs": 1}}


def probe_body(teacher_id: str) -> dict[str, Any]:
    return {
        "teacher": {"file_id": teacher_id, "architecture": SMALL_TEACHER_ARCH},
        "student": STUDENT,
        "dataset": {"train": "builtin:digits"},
        "training": {"epochs": 1},
    }


def operator_cli(database_url: str, *args: str) -> str:
    """`python -m app.cli …` against the scratch database, as an operator runs it."""
    env = service_env(database_url=database_url, auth="required")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


async def burst(url: str, key: str, body: dict[str, Any], *, jobs: int, clients: int, prefix: str) -> dict[str, Any]:
    """`jobs` submissions by `clients` concurrent clients: latencies (in the order they were sent), statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    counter = iter(range(jobs))
    sent: dict[int, float] = {}
    started = time.perf_counter()

    async def client() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as http:
            for n in counter:
                t0 = time.perf_counter()
                try:
                    response = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"{prefix}-{n}"})
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                latencies.append(time.perf_counter() - t0)
                sent[n] = latencies[-1]
                statuses[response.status_code] += 1
                if response.status_code != 201 and len(errors) < 5:
                    errors.append(response.text[:300])

    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    # In submission order: the live jobs of the tenant grow through the burst, and the slot check reads them all.
    ordered = np.asarray([sent[n] for n in sorted(sent)]) * 1000
    tenth = max(len(ordered) // 10, 1)
    return {
        "submitted": len(latencies),
        "clients": clients,
        "wall_seconds": round(wall, 2),
        "throughput_per_s": round(len(latencies) / wall, 1),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "p50_first_tenth_ms": round(float(np.percentile(ordered[:tenth], 50)), 1),
        "p50_last_tenth_ms": round(float(np.percentile(ordered[-tenth:], 50)), 1),
        "errors": errors,
    }


def queue_length(redis_url: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).llen(QUEUE))


def accounted(database_url: str, redis_url: str, *, prefix: str, expected: int, queued_before: int) -> dict[str, int]:
    """This burst's rows, how many have dispatched_at, and the messages it added to the queue; waits up to
    30 s for the after-commit sends to land."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as connection:
            rows, dispatched = connection.execute(
                text(
                    "SELECT count(*), count(dispatched_at) FROM jobs WHERE tenant_id = :t AND idempotency_key LIKE :p"
                ),
                {"t": TENANT, "p": f"{prefix}-%"},
            ).one()
        messages = queue_length(redis_url) - queued_before
        if (dispatched >= expected and messages >= expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    engine.dispose()
    return {"rows": rows, "dispatched_at_set": dispatched, "queue_messages": messages}


@contextmanager
def profiling(pid: int, raw: Path) -> Iterator[None]:
    """py-spy on `pid` while the block runs: its stacks, `--nonblocking` (the API is never paused) at 50 Hz."""
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
         "--nonblocking", "--rate", "50", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        spy.wait(timeout=60)


# Where a sample's time is: the library of its innermost frame that is not the standard library.
_BUCKETS = [
    ("psycopg (sending, waiting for Postgres, decoding rows)", ("(psycopg/",)),
    ("redis send (kombu/celery/redis)", ("(kombu/", "(celery/", "(redis/")),
    ("engine check (distill)", ("(distill/",)),
    ("torch", ("(torch/",)),
    ("SQLAlchemy ORM / core", ("(sqlalchemy/",)),
    ("pydantic", ("(pydantic",)),
    (
        "FastAPI / Starlette / uvicorn / anyio",
        ("(fastapi/", "(starlette/", "(uvicorn/", "(h11/", "(httptools/", "(anyio/"),
    ),
    ("json (decoding JSON columns)", ("(json/",)),
    ("app", ("(app/",)),
]


# Parts of a submission, by a function on the stack (inclusive: a sample counts for each part it is in).
_PARTS = {
    "plan (short session: idempotency, slot check, files)": "plan_submission (app/jobs/service.py",
    "engine check (check_job, probe-slot thread)": "check_job (distill/validate.py",
    "write (create_job: locks, slot check again, insert)": "create_job (app/jobs/service.py",
    "slot check: list_active, both times": "list_active (app/jobs/repository.py",
    "  of which JSON decoding of the live jobs' rows": "JSONDecoder.decode (",
    "after-commit send (Celery to Redis, UPDATE dispatched_at)": "send_run_job (app/queue.py",
    "pool pre-ping at checkout (SELECT 1)": "do_ping (",
    "commit (app.db._commit, without the send)": "Connection.commit (psycopg",
}


def summarize_stacks(raw: Path) -> dict[str, Any]:
    """py-spy's raw format: one line per distinct stack, `frame;frame;... count`, outermost first."""
    total = 0
    buckets: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):  # inclusive: each function once per sample
            if "(app/" in frame or "(distill/" in frame:
                function, _, where = frame.partition(" (")
                functions[f"{function} ({where.split(':')[0]})"] += count
        for part, function in _PARTS.items():
            if any(function in frame for frame in frames):
                parts[part] += count
        inner_first = frames[::-1]
        bucket = next(
            (name for frame in inner_first for name, keys in _BUCKETS if any(k in frame for k in keys)), "other"
        )
        buckets[bucket] += count
    share = {name: round(100 * n / max(total, 1), 1) for name, n in buckets.most_common()}
    top = [{"function": f, "percent": round(100 * n / max(total, 1), 1)} for f, n in functions.most_common(15)]
    return {
        "samples": total,
        "note": "py-spy samples (50 Hz) of the threads py-spy found busy; one waiting in psycopg counts",
        "percent_by_part_inclusive": {part: round(100 * parts[part] / max(total, 1), 1) for part in _PARTS},
        "percent_by_innermost_library": share,
        "top_app_functions_inclusive": top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--probe-jobs", type=int, default=32)
    args = parser.parse_args()
    load_before = os.getloadavg()

    database_url = postgres_database(DATABASE)
    redis_url = redis_database(REDIS_DB)
    key = json.loads(operator_cli(database_url, "keys", "create", "--tenant", TENANT, "--json"))["key"]
    operator_cli(database_url, "tenants", "set", TENANT, "--max-concurrent-jobs", "100000")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="distillery-burst-") as tmp:
        root = Path(tmp)
        env = service_env(
            database_url=database_url,
            broker_url=redis_url,
            auth="required",
            artifact_dir=str(root / "artifacts"),
            upload_dir=str(root / "files"),
            broker_dir=str(root / "broker"),
        )
        api = start_api(env, root / "logs", extra_args=["--workers", "1", "--no-access-log", "--log-level", "warning"])
        try:
            headers = {"Authorization": f"Bearer {key}"}
            with (
                httpx.Client(base_url=api.url, headers=headers, timeout=120) as http,
                open(small_teacher(root), "rb") as f,
            ):
                teacher = http.post("/v1/files", files={"file": ("t.safetensors", f)}, data={"purpose": "teacher"})
                teacher.raise_for_status()
            bodies = {"builtin": builtin_body(), "probe": probe_body(teacher.json()["id"])}
            for kind, body in bodies.items():  # warm-up: imports (torch for the in-process check), pools, caches
                asyncio.run(burst(api.url, key, body, jobs=4, clients=2, prefix=f"warmup-{kind}"))
            alone = {  # one client, three submissions one after another: the cost of one, without a queue
                kind: asyncio.run(burst(api.url, key, body, jobs=3, clients=1, prefix=f"alone-{kind}"))["p50_ms"]
                for kind, body in bodies.items()
            }
            out = REPO / "bench" / "out"
            out.mkdir(exist_ok=True)
            raw = out / "submit_burst.pyspy.txt"
            for kind, body in bodies.items():
                print(f"{kind} burst, load average {os.getloadavg()}", flush=True)
                jobs = args.probe_jobs if kind == "probe" else args.jobs
                queued_before = queue_length(redis_url)
                with profiling(api.process.pid, raw) if kind == "builtin" else nullcontext():
                    stats = asyncio.run(burst(api.url, key, body, jobs=jobs, clients=args.clients, prefix=kind))
                stats["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
                stats["accounted"] = accounted(
                    database_url, redis_url, prefix=kind, expected=stats["submitted"], queued_before=queued_before
                )
                stats["alone_p50_ms"] = alone[kind]
                if kind == "builtin":
                    stats["profile"] = {"raw_stacks": str(raw.relative_to(REPO)), **summarize_stacks(raw)}
                results[kind] = stats
                print(json.dumps({k: v for k, v in stats.items() if k != "profile"}), flush=True)
        finally:
            api.stop()

    for kind in ("builtin", "probe"):
        stats = results[kind]
        stats["all_201"] = stats["statuses"] == {"201": stats["submitted"]}
        counts = stats["accounted"]
        stats["none_lost"] = (
            counts["rows"] == counts["dispatched_at_set"] == counts["queue_messages"] == stats["submitted"]
        )
        stats["p99_under_target"] = stats["p99_ms"] < TARGET_P99_MS
    result = {
        "machine": run_machine(load_before),
        "server": "uvicorn, 1 process, --no-access-log, DISTILLERY_AUTH=required; Postgres 15 and Redis 7 on localhost",
        "target": f"{args.jobs} submissions, {args.clients} clients: all 201, none lost, p99 < {TARGET_P99_MS:.0f} ms",
        **results,
    }
    path = _write(result)
    print(f"\n(results in {path})\n")
    columns = ["submission", "alone p50 ms", "jobs", "clients", "all 201", "rows / dispatched / queued"]
    print("| " + " | ".join([*columns, "p50 ms", "p95 ms", "p99 ms", "jobs/s"]) + " |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for kind in ("builtin", "probe"):
        s = results[kind]
        a = s["accounted"]
        cells = [kind, s["alone_p50_ms"], s["submitted"], s["clients"], s["all_201"]]
        cells += [f"{a['rows']} / {a['dispatched_at_set']} / {a['queue_messages']}"]
        cells += [s["p50_ms"], s["p95_ms"], s["p99_ms"], s["throughput_per_s"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(json.dumps(results["builtin"]["profile"]["percent_by_part_inclusive"], indent=1))


def _write(result: dict[str, Any]) -> Path:
    from bench.common import write_result

    return write_result("submit_burst", result)


if __name__ == "__main__":
    main()
