"""What does reading a job cost next to FastAPI doing nothing? GET /v1/jobs/{id} vs a bare endpoint.

Two uvicorn servers with the same settings (one process, same loop and HTTP parser, no access log): the
Distillery API on Postgres (the job read is one SELECT of the job and one of its artifacts, plus JSON), and
`bare_app` below, one endpoint that returns a constant dict. 64 concurrent clients (asyncio, one keep-alive
HTTP/1.1 connection each, loopback only) hammer each server for a fixed time; rounds alternate between
the two servers so machine noise hits both alike, and the ratio comes from the same run. The clients share
the machine's cores with the server: absolute numbers are a floor, the ratio is the point.

    python -m bench.api_throughput [--clients 64] [--seconds 5] [--rounds 3]

Needs Postgres on its standard local port. Writes bench/results/api_throughput.json, prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def hammer(url: str, *, clients: int, seconds: float) -> tuple[int, list[float], int]:
    """(requests completed, their latencies in seconds, errors) for `clients` loops over `seconds`.

    A minimal HTTP/1.1 client (one keep-alive connection per client, raw asyncio streams): httpx's async
    pool costs more CPU per request than the server under test at 64 connections, and would measure itself.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode()
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
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), latencies, errors


def stats(count: int, latencies: list[float], seconds: float, errors: int) -> dict[str, Any]:
    import numpy as np

    values = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {
        "requests": count,
        "errors": errors,
        "throughput_rps": round(count / seconds, 1),
        "p50_ms": round(float(np.percentile(values, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(values, 99)) * 1000, 2),
    }


def main() -> None:
    from bench.common import write_result
    from bench.services import SMALL_TEACHER_ARCH, bench_machine, postgres_database, small_teacher
    from tests.e2e.processes import free_port, service_env, start_api

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="distillery-bench-") as tmp:
        root = Path(tmp)
        env = service_env(
            database_url=postgres_database("distillery_bench"),
            broker_url="memory://",  # no worker: the job stays queued, which is all a read needs
            artifact_dir=str(root / "artifacts"),
            upload_dir=str(root / "files"),
            broker_dir=str(root / "broker"),
        )
        flags = ["--workers", "1", "--no-access-log", "--log-level", "warning"]
        api = start_api(env, root / "logs", extra_args=flags)
        port = free_port()
        bare_server = start_api(
            env, root / "logs", port=port, target=["bench.api_throughput:bare_app"], extra_args=flags
        )
        try:
            import httpx

            with httpx.Client(base_url=api.url, timeout=60) as http:
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
            targets = {"bare": f"{bare_server.url}/bare", "job": f"{api.url}/v1/jobs/{job.json()['id']}"}
            totals: dict[str, list[Any]] = {name: [0, [], 0] for name in targets}
            for url in targets.values():  # warm-up: connections, the DB pool, caches
                asyncio.run(hammer(url, clients=args.clients, seconds=1.0))
            for _ in range(args.rounds):
                for name, url in targets.items():
                    count, latencies, errors = asyncio.run(hammer(url, clients=args.clients, seconds=args.seconds))
                    totals[name][0] += count
                    totals[name][1].extend(latencies)
                    totals[name][2] += errors
        finally:
            api.stop()
            bare_server.stop()

    seconds = args.rounds * args.seconds
    bare_stats = stats(totals["bare"][0], totals["bare"][1], seconds, totals["bare"][2])
    job_stats = stats(totals["job"][0], totals["job"][1], seconds, totals["job"][2])
    result = {
        "clients": args.clients,
        "seconds_per_server": seconds,
        "rounds": args.rounds,
        "server": "uvicorn, 1 worker process, --no-access-log; Postgres 15 on localhost",
        "bare_fastapi": bare_stats,
        "get_job_postgres": job_stats,
        "throughput_ratio_job_over_bare": round(job_stats["throughput_rps"] / bare_stats["throughput_rps"], 3),
        "p99_ratio_job_over_bare": round(job_stats["p99_ms"] / bare_stats["p99_ms"], 3),
        "machine_extra": bench_machine(),
    }
    path = write_result("api_throughput" if args.clients == 64 else f"api_throughput_c{args.clients}", result)
    print(f"\n{args.clients} concurrent clients, {seconds:.0f} s per endpoint, loopback (results in {path})\n")
    print("| endpoint | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for label, s in [("bare FastAPI `GET /bare`", bare_stats), ("`GET /v1/jobs/{id}` (Postgres)", job_stats)]:
        print(f"| {label} | {s['throughput_rps']} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} |")
    print(
        f"\njob read / bare: throughput × {result['throughput_ratio_job_over_bare']}, "
        f"p99 × {result['p99_ratio_job_over_bare']}"
    )


if __name__ == "__main__":
    main()
