"""What does reading a job cost next to FastAPI doing nothing? GET /v1/jobs/{id} vs a bare endpoint.

Uvicorn servers with the same settings (one process, same loop and HTTP parser, no access log): the
Distillery API on Postgres, as it runs in production (auth required, every request carries an API key), and
`bare_app` below, one endpoint that returns a constant dict. 64 concurrent clients (asyncio, one keep-alive
HTTP/1.1 connection each, loopback only) hammer one target at a time for a fixed time; rounds alternate
between the targets so machine noise hits all alike, and the ratios come from the same run. The clients
share the machine's cores with the servers: absolute numbers are a floor, the ratios are the point.

The targets:
- `bare`: the bare endpoint.
- `job`: a queued job, polled: the API answers from memory until Postgres notifies a change
  (app/jobs/read_cache.py).
- `job_304`: the same with its ETag (`If-None-Match`, answered 304).
- `job_changing`: a second job whose progress is written every CHANGE_SECONDS while it is polled (a worker
  writes at most every 0.5 s), so every change is heard and read again from the database.
- `job_db`: the first job from a second API process with the cache off (DISTILLERY_JOB_READ_CACHE_ENTRIES=0):
  every request misses, and concurrent misses of one job share one read (single flight), the autocommit
  SELECT of the job joined with its artifacts, plus JSON.

Besides requests/s, each round reads the server process's CPU time (utime + stime from /proc), so the CPU
cost of one request is measured too: on a shared, loaded machine that figure moves far less than throughput.

    python -m bench.api_throughput [--clients 64] [--seconds 5] [--rounds 3]

Needs Postgres at DISTILLERY_TEST_POSTGRES (bench/services.py; default: the standard local port). Writes
bench/results/api_throughput.json, prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI

from bench.http_client import Origin, build_request, exchange

REQUEST_TIMEOUT = 10.0
CHANGE_SECONDS = 0.1

bare_app = FastAPI()


@bare_app.get("/bare")
def bare() -> dict[str, Any]:
    return {"id": "job_0", "status": "queued", "progress": {}}


@bare_app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hammer(
    url: str, *, clients: int, seconds: float, headers: dict[str, str] | None = None, ok: int = 200
) -> tuple[int, list[float], int]:
    """(requests completed, their latencies in seconds, errors) for `clients` loops over `seconds`.

    bench/http_client.py is the client (one keep-alive connection per client, raw asyncio streams): httpx's
    async pool costs more CPU per request than the server under test at 64 connections, and would measure itself.
    """
    origin = Origin.of(url)
    request = build_request("GET", origin, urlsplit(url).path, headers=headers)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await origin.connect()
        try:
            while (start := time.perf_counter()) < deadline:
                try:
                    status, _ = await asyncio.wait_for(exchange(reader, writer, request), timeout=REQUEST_TIMEOUT)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    # A stuck or dropped request is an error; carry on with a fresh connection.
                    errors += 1
                    writer.close()
                    reader, writer = await origin.connect()
                    continue
                if status == ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), latencies, errors


def stats(count: int, latencies: list[float], seconds: float, errors: int, cpu: float) -> dict[str, Any]:
    import numpy as np

    values = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {
        "requests": count,
        "errors": errors,
        "throughput_rps": round(count / seconds, 1),
        "server_cpu_ms_per_request": round(cpu / max(count, 1) * 1000, 3),
        "p50_ms": round(float(np.percentile(values, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(values, 99)) * 1000, 2),
    }


def submit_job(http: Any, teacher_id: str) -> str:
    from bench.services import SMALL_TEACHER_ARCH

    job = http.post(
        "/v1/jobs",
        json={
            "teacher": {"file_id": teacher_id, "architecture": SMALL_TEACHER_ARCH},
            "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
            "dataset": {"train": "builtin:digits"},
        },
    )
    job.raise_for_status()
    return str(job.json()["id"])


@contextmanager
def changing(database_url: str, job_id: str) -> Iterator[list[int]]:
    """While inside: the job's progress is written every CHANGE_SECONDS (as a worker's flush does, faster).
    Yields a one-item list: how many writes were made."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    stop = threading.Event()
    writes = [0]

    def write() -> None:
        while not stop.wait(CHANGE_SECONDS):
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE jobs SET progress = :p, updated_at = now() WHERE id = :id"),
                    {"p": f'{{"epoch": {writes[0]}}}', "id": job_id},
                )
            writes[0] += 1

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield writes
    finally:
        stop.set()
        thread.join()
        engine.dispose()


def main() -> None:
    from bench.common import write_result
    from bench.services import postgres_database, run_machine, small_teacher
    from tests.e2e.conftest import create_key
    from tests.e2e.processes import free_port, service_env, start_api

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="distillery-bench-") as tmp:
        root = Path(tmp)
        database_url = postgres_database("distillery_bench")
        env = service_env(
            database_url=database_url,
            broker_url="memory://",  # no worker: the job stays queued, which is all a read needs
            artifact_dir=str(root / "artifacts"),
            upload_dir=str(root / "files"),
            broker_dir=str(root / "broker"),
        )
        env["DISTILLERY_AUTH"] = "required"
        auth = {"Authorization": f"Bearer {create_key(env, 'bench')}"}
        flags = ["--workers", "1", "--no-access-log", "--log-level", "warning"]
        api = start_api(env, root / "logs", extra_args=flags)
        api_db = start_api({**env, "DISTILLERY_JOB_READ_CACHE_ENTRIES": "0"}, root / "logs", extra_args=flags)
        bare_server = start_api(
            env, root / "logs", port=free_port(), target=["bench.api_throughput:bare_app"], extra_args=flags
        )
        try:
            import httpx

            with httpx.Client(base_url=api.url, timeout=60, headers=auth) as http:
                with open(small_teacher(root), "rb") as f:
                    teacher = http.post("/v1/files", files={"file": ("t.safetensors", f)}, data={"purpose": "teacher"})
                teacher.raise_for_status()
                job_id, changing_id = (submit_job(http, teacher.json()["id"]) for _ in range(2))
                etag = http.get(f"/v1/jobs/{job_id}").headers["etag"]
            job_path = f"/v1/jobs/{job_id}"
            # name -> (url, headers, expected status, server pid)
            targets = {
                "bare": (f"{bare_server.url}/bare", {}, 200, bare_server.process.pid),
                "job": (api.url + job_path, auth, 200, api.process.pid),
                "job_304": (api.url + job_path, {**auth, "If-None-Match": etag}, 304, api.process.pid),
                "job_changing": (f"{api.url}/v1/jobs/{changing_id}", auth, 200, api.process.pid),
                "job_db": (api_db.url + job_path, auth, 200, api_db.process.pid),
            }
            totals: dict[str, list[Any]] = {name: [0, [], 0, 0.0] for name in targets}
            writes = 0
            for url, headers, ok, _ in targets.values():  # warm-up: connections, the DB pool, caches
                asyncio.run(hammer(url, clients=args.clients, seconds=1.0, headers=headers, ok=ok))
            for _ in range(args.rounds):
                for name, (url, headers, ok, pid) in targets.items():
                    cpu = cpu_seconds(pid)
                    with changing(database_url, changing_id) if name == "job_changing" else nullcontext([0]) as made:
                        count, latencies, errors = asyncio.run(
                            hammer(url, clients=args.clients, seconds=args.seconds, headers=headers, ok=ok)
                        )
                    writes += made[0]
                    totals[name][0] += count
                    totals[name][1].extend(latencies)
                    totals[name][2] += errors
                    totals[name][3] += cpu_seconds(pid) - cpu
        finally:
            api.stop()
            api_db.stop()
            bare_server.stop()

    seconds = args.rounds * args.seconds
    results = {
        name: stats(count, latencies, seconds, errors, cpu) for name, (count, latencies, errors, cpu) in totals.items()
    }
    bare = results["bare"]
    result: dict[str, Any] = {
        "clients": args.clients,
        "seconds_per_target": seconds,
        "rounds": args.rounds,
        "server": "uvicorn, 1 worker process per server, --no-access-log; Postgres 15 on localhost",
        "change_seconds": CHANGE_SECONDS,
        "changes_written": writes,
        "targets": results,
        "ratios_over_bare": {
            name: {
                "throughput": round(s["throughput_rps"] / bare["throughput_rps"], 3),
                "p99": round(s["p99_ms"] / bare["p99_ms"], 3),
                "cpu_per_request": round(s["server_cpu_ms_per_request"] / bare["server_cpu_ms_per_request"], 3),
            }
            for name, s in results.items()
            if name != "bare"
        },
        "machine": run_machine(load_before),
    }
    path = write_result("api_throughput" if args.clients == 64 else f"api_throughput_c{args.clients}", result)
    print(f"\n{args.clients} concurrent clients, {seconds:.0f} s per target, loopback (results in {path})\n")
    print("| target | requests/s | ÷ bare | p50 ms | p99 ms | server CPU ms / request | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in results.items():
        ratio = result["ratios_over_bare"].get(name, {"throughput": 1.0})["throughput"]
        print(
            f"| {name} | {s['throughput_rps']} | {ratio} | {s['p50_ms']} | {s['p99_ms']} | "
            f"{s['server_cpu_ms_per_request']} | {s['errors']} |"
        )
    print(f"\njob_changing: {writes} progress writes while polled ({CHANGE_SECONDS} s apart)")


if __name__ == "__main__":
    main()
