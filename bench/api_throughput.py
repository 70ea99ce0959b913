"""What does reading a job cost next to FastAPI doing nothing? GET /v1/jobs/{id} vs a bare endpoint.

Two uvicorn servers with the same settings (one process, same loop and HTTP parser, no access log): the
Distillery API on Postgres (the job read is one autocommit SELECT of the job joined with its artifacts, plus
JSON), and `bare_app` below, one endpoint that returns a constant dict. 64 concurrent clients (asyncio, one
keep-alive HTTP/1.1 connection each, loopback only) hammer each server for a fixed time; rounds alternate between
the two servers so machine noise hits both alike, and the ratio comes from the same run. The clients share
the machine's cores with the server: absolute numbers are a floor, the ratio is the point. The API runs as in
production, auth required, and every request carries an API key; a third target polls the job with its
ETag (`If-None-Match`, answered 304). Besides requests/s, each round reads the server process's CPU time
(utime + stime from /proc), so the CPU cost of one request is measured too: on a shared, loaded machine
that figure moves far less than throughput does.

    python -m bench.api_throughput [--clients 64] [--seconds 5] [--rounds 3]

Needs Postgres at DISTILLERY_TEST_POSTGRES (bench/services.py; default: the standard local port). Writes
bench/results/api_throughput.json, prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI

REQUEST_TIMEOUT = 10.0

bare_app = FastAPI()


@bare_app.get("/bare")
def bare() -> dict[str, Any]:
    return {"id": "job_0", "status": "queued", "progress": {}}


@bare_app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One HTTP/1.1 GET on a kept-alive connection; returns the status code (the body is read and dropped)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hammer(
    url: str, *, clients: int, seconds: float, headers: dict[str, str] | None = None, ok: int = 200
) -> tuple[int, list[float], int]:
    """(requests completed, their latencies in seconds, errors) for `clients` loops over `seconds`.

    A minimal HTTP/1.1 client (one keep-alive connection per client, raw asyncio streams): httpx's async
    pool costs more CPU per request than the server under test at 64 connections, and would measure itself.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (start := time.perf_counter()) < deadline:
                try:
                    status = await asyncio.wait_for(_get(reader, writer, request), timeout=REQUEST_TIMEOUT)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    # A stuck or dropped request is an error; carry on with a fresh connection.
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
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


def main() -> None:
    from bench.common import write_result
    from bench.services import SMALL_TEACHER_ARCH, postgres_database, run_machine, small_teacher
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
        env = service_env(
            database_url=postgres_database("distillery_bench"),
            broker_url="memory://",  # no worker: the job stays queued, which is all a read needs
            artifact_dir=str(root / "artifacts"),
            upload_dir=str(root / "files"),
            broker_dir=str(root / "broker"),
        )
        env["DISTILLERY_AUTH"] = "required"
        auth = {"Authorization": f"Bearer {create_key(env, 'bench')}"}
        flags = ["--workers", "1", "--no-access-log", "--log-level", "warning"]
        api = start_api(env, root / "logs", extra_args=flags)
        port = free_port()
        bare_server = start_api(
            env, root / "logs", port=port, target=["bench.api_throughput:bare_app"], extra_args=flags
        )
        try:
            import httpx

            with httpx.Client(base_url=api.url, timeout=60, headers=auth) as http:
                with open(small_teacher(root), "rb") as f:
                    teacher = http.post("/v1/files", files={"file": ("t.safetensors", f)}, data={"purpose": "teacher"})
                teacher.raise_for_status()
                job = http.post(
                    "/v1/jobs",
                    json={
                        "teacher": {"file_id": teacher.json()["id"], "architecture": SMALL_TEACHER_ARCH},
                        "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
                        "dataset": {"train": "builtin:digits"},
                    },
                )
                job.raise_for_status()
                etag = http.get(f"/v1/jobs/{job.json()['id']}").headers["etag"]
            job_url = f"{api.url}/v1/jobs/{job.json()['id']}"
            # name -> (url, headers, expected status, server pid)
            targets = {
                "bare": (f"{bare_server.url}/bare", {}, 200, bare_server.process.pid),
                "job": (job_url, auth, 200, api.process.pid),
                "job_304": (job_url, {**auth, "If-None-Match": etag}, 304, api.process.pid),
            }
            totals: dict[str, list[Any]] = {name: [0, [], 0, 0.0] for name in targets}
            for url, headers, ok, _ in targets.values():  # warm-up: connections, the DB pool, caches
                asyncio.run(hammer(url, clients=args.clients, seconds=1.0, headers=headers, ok=ok))
            for _ in range(args.rounds):
                for name, (url, headers, ok, pid) in targets.items():
                    cpu = cpu_seconds(pid)
                    count, latencies, errors = asyncio.run(
                        hammer(url, clients=args.clients, seconds=args.seconds, headers=headers, ok=ok)
                    )
                    totals[name][0] += count
                    totals[name][1].extend(latencies)
                    totals[name][2] += errors
                    totals[name][3] += cpu_seconds(pid) - cpu
        finally:
            api.stop()
            bare_server.stop()

    seconds = args.rounds * args.seconds
    bare_stats, job_stats, etag_stats = (
        stats(count, latencies, seconds, errors, cpu) for count, latencies, errors, cpu in totals.values()
    )
    result = {
        "clients": args.clients,
        "seconds_per_server": seconds,
        "rounds": args.rounds,
        "server": "uvicorn, 1 worker process, --no-access-log; Postgres 15 on localhost",
        "bare_fastapi": bare_stats,
        "get_job_postgres": job_stats,
        "get_job_if_none_match_304": etag_stats,
        "throughput_ratio_job_over_bare": round(job_stats["throughput_rps"] / bare_stats["throughput_rps"], 3),
        "p99_ratio_job_over_bare": round(job_stats["p99_ms"] / bare_stats["p99_ms"], 3),
        "cpu_per_request_ratio_job_over_bare": round(
            job_stats["server_cpu_ms_per_request"] / bare_stats["server_cpu_ms_per_request"], 3
        ),
        "machine": run_machine(load_before),
    }
    path = write_result("api_throughput" if args.clients == 64 else f"api_throughput_c{args.clients}", result)
    print(f"\n{args.clients} concurrent clients, {seconds:.0f} s per endpoint, loopback (results in {path})\n")
    print("| endpoint | requests/s | p50 ms | p99 ms | server CPU ms / request | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, s in [
        ("bare FastAPI `GET /bare`", bare_stats),
        ("`GET /v1/jobs/{id}` (Postgres, API key)", job_stats),
        ("the same with `If-None-Match` (304)", etag_stats),
    ]:
        print(
            f"| {label} | {s['throughput_rps']} | {s['p50_ms']} | {s['p99_ms']} | "
            f"{s['server_cpu_ms_per_request']} | {s['errors']} |"
        )
    print(
        f"\njob read / bare: throughput × {result['throughput_ratio_job_over_bare']}, "
        f"p99 × {result['p99_ratio_job_over_bare']}, server CPU per request × "
        f"{result['cpu_per_request_ratio_job_over_bare']}"
    )


if __name__ == "__main__":
    main()
