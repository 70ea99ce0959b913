"""Bursts of submissions: 1,000 POST /v1/jobs from 32 clients at once, all 201, none lost, and how long each took.

The API runs as in production (uvicorn, one process unless --workers, DISTILLERY_AUTH=required) on a scratch Postgres
database and a Redis broker (db 11); no worker consumes, so every accepted job's message must still be in the
queue at the end. The bench tenant's limit of live jobs is raised with the operator CLI (`distillery tenants
set`), its key made with `distillery keys create`. 32 clients (asyncio, one keep-alive connection each) take
submissions from a shared counter until the burst is done; each has its own Idempotency-Key.

The bench measures the server, not its clients: they share the API's cores, so they are the lean raw-asyncio
HTTP/1.1 client of bench/http_client.py (0.13-0.24 ms of CPU per submission where httpx.AsyncClient took 2.5 ms,
which came out of the API's time). `--client httpx` runs them on httpx for comparison; the CPU the clients
spent per submission is recorded either way. Three kinds:

  builtin       a registry student distilling itself on builtin:digits (mode self): nothing uploaded, so the
                engine's check runs in the API process; its verdict is remembered after the warm-up
                (app/checks/verdicts.py), so the burst measures the submission path itself;
  probe         a teacher uploaded just before the burst (an mlp for 8x8 digits, weights never seen before) and
                a registry student: the first submission runs the engine's check in a sandboxed
                `python -m distill check` child (app/probe.py), and the others, identical, wait for it and
                share its pass (single flight); `--probe-jobs` submissions;
  probe_cached  the same teacher and spec again: the pass is stored, so no probe runs.

Checked after each burst: every answer 201, one row per submission in `jobs` with dispatched_at set (written
with the row, cleared if the send fails), one message per job in the Redis queue. Also the API's CPU seconds
during the burst (its worker processes too), the load average before and after it, and one submission alone
(three in a row, one client; a probe each with a new teacher for `probe`). py-spy samples the API during the
first builtin burst (50 Hz, without pausing it; its own CPU comes out of the same 2 cores; `--no-profile`: not),
and its stacks are summed up by part of the request.

    python -m bench.submit_burst [--jobs 1000] [--clients 32] [--probe-jobs 32] [--workers 1]
        [--client raw|httpx] [--loop asyncio|uvloop] [--kinds builtin,probe,probe_cached] [--repeat N]
        [--no-profile]

Needs Postgres and Redis (DISTILLERY_TEST_POSTGRES, DISTILLERY_BENCH_REDIS; their standard local ports by
default). Writes bench/results/submit_burst.json (another run: submit_burst_w<workers>_<client>_<kinds>.json).
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
from uuid import uuid4

import httpx
import numpy as np

from bench.http_client import Origin, build_request, exchange
from bench.services import SMALL_TEACHER_ARCH, postgres_database, redis_database, run_machine, small_teacher
from tests.e2e.processes import REPO, service_env, start_api

DATABASE = "distillery_burst"
REDIS_DB = 11
TENANT = "bench"
QUEUE = "train"
TARGET_P99_MS = 300.0
KINDS = ("builtin", "probe", "probe_cached")
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


def burst(
    url: str,
    key: str,
    body: dict[str, Any],
    *,
    jobs: int,
    clients: int,
    prefix: str,
    client: str = "raw",
    loop: str = "asyncio",
) -> dict[str, Any]:
    """`jobs` submissions by `clients` concurrent clients: latencies (in the order they were sent), statuses,
    and the CPU the clients (this process) spent per submission.

    `client`: "raw" (bench/http_client.py, the default: it costs the shared cores little, so the burst
    measures the server) or "httpx" (httpx.AsyncClient, as before, for comparison); `loop`: the clients'
    event loop, "asyncio" or "uvloop"."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    counter = iter(range(jobs))
    sent: dict[int, float] = {}

    def record(n: int, t0: float, status: int, text: str) -> None:
        latencies.append(time.perf_counter() - t0)
        sent[n] = latencies[-1]
        statuses[status] += 1
        if status != 201 and len(errors) < 5:
            errors.append(text[:300])

    async def raw_client() -> None:
        origin = Origin.of(url)
        payload = json.dumps(body).encode()
        reader, writer = await origin.connect()
        try:
            for n in counter:
                t0 = time.perf_counter()
                headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"{prefix}-{n}"}
                request = build_request("POST", origin, "/v1/jobs", headers=headers, body=payload)
                try:
                    status, answer = await exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors.append(repr(exc))
                    writer.close()
                    reader, writer = await origin.connect()
                    continue
                record(n, t0, status, answer.decode(errors="replace"))
        finally:
            writer.close()

    async def httpx_client() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as http:
            for n in counter:
                t0 = time.perf_counter()
                try:
                    response = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"{prefix}-{n}"})
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                record(n, t0, response.status_code, response.text)

    async def all_clients() -> None:
        one = {"raw": raw_client, "httpx": httpx_client}[client]
        await asyncio.gather(*(one() for _ in range(clients)))

    cpu_before = time.process_time()  # this process's threads only: the clients (the API is a child)
    started = time.perf_counter()
    if loop == "uvloop":
        import uvloop

        uvloop.run(all_clients())
    else:
        asyncio.run(all_clients())
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_before
    ms = np.asarray(latencies) * 1000
    # In submission order: the live jobs of the tenant grow through the burst, and the slot check reads them all.
    ordered = np.asarray([sent[n] for n in sorted(sent)]) * 1000
    tenth = max(len(ordered) // 10, 1)
    return {
        "submitted": len(latencies),
        "clients": clients,
        "client": f"{client} ({loop})",
        "wall_seconds": round(wall, 2),
        "throughput_per_s": round(len(latencies) / wall, 1),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "p50_first_tenth_ms": round(float(np.percentile(ordered[:tenth], 50)), 1),
        "p50_last_tenth_ms": round(float(np.percentile(ordered[-tenth:], 50)), 1),
        "client_cpu_ms_per_job": round(1000 * client_cpu / max(len(latencies), 1), 2),
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
def profiling(pid: int, raw: Path, *, gil: bool = False, rate: int = 50) -> Iterator[None]:
    """py-spy on `pid` while the block runs: its stacks, `--nonblocking` (the API is never paused), `rate` Hz.
    Without pausing it py-spy cannot tell a waiting thread from a running one, so the samples are every
    thread's wall time; `gil`: only the thread that holds the GIL, i.e. where the Python CPU goes."""
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
         "--nonblocking", "--subprocesses", "--rate", str(rate), "-o", str(raw), *(["--gil"] if gil else [])],
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
    "submit (one transaction: files, verdict, write, slot)": "submit_job (app/jobs/service.py",
    "  of which the write (job + event, tenant lock, count: one round trip)": "write_new_job (app/jobs/repository.py",
    "  of which the Idempotency-Key lookup (a replay, or a request refused)": "_replayed (app/jobs/service.py",
    "  of which the plan (files, engine config, verdict key)": "plan_job (app/jobs/validation.py",
    "engine check (check_job, probe-slot thread)": "check_job (distill/validate.py",
    "commit (app.db._commit, with the after-commit send)": "_commit (app/db.py",
    "  of which the send (the run_job message to Redis)": "RedisSender.send (app/queue_redis.py",
    "  of which clearing dispatched_at after a failed send": "mark_unsent (app/queue.py",
    "pool pre-ping at checkout (SELECT 1)": "do_ping (",
}


def summarize_stacks(raw: Path, *, gil: bool) -> dict[str, Any]:
    """py-spy's raw format: one line per distinct stack, `frame;frame;... count`, outermost first."""
    total = 0
    buckets: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():  # a process's own line, without frames
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
        "note": "py-spy samples (50 Hz) of the thread holding the GIL (Python CPU)"
        if gil
        else "py-spy samples (50 Hz) of every thread, waiting or not (wall time; --nonblocking cannot tell)",
        "percent_by_part_inclusive": {part: round(100 * parts[part] / max(total, 1), 1) for part in _PARTS},
        "percent_by_innermost_library": share,
        "top_app_functions_inclusive": top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--probe-jobs", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the API")
    parser.add_argument("--threadpool", type=int, default=None, help="the API's threadpool_size (default: its own)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="the clients' HTTP library")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="the clients' event loop")
    parser.add_argument("--gil", action="store_true", help="profile the GIL holder only (CPU), not every thread")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"bursts to run, of {','.join(KINDS)}")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the builtin and probe_cached bursts this many times (r2-builtin, …)"
    )
    parser.add_argument("--no-profile", action="store_true", help="no py-spy during the builtin burst")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    clients = {"client": args.client, "loop": args.loop}
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
        if args.threadpool is not None:
            env["DISTILLERY_THREADPOOL_SIZE"] = str(args.threadpool)
        flags = ["--workers", str(args.workers), "--no-access-log", "--log-level", "warning"]
        api = start_api(env, root / "logs", extra_args=flags)
        try:
            with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
                teachers = Teachers(http, small_teacher(root))
                # Warm-up: imports (torch for the in-process check), pools, the builtin verdict; another teacher.
                warmup = {"builtin": builtin_body(), "probe": probe_body(teachers.new())}
                for kind, body in warmup.items():
                    burst(api.url, key, body, jobs=4 * args.workers, clients=2, prefix=f"warmup-{kind}", **clients)
                # One client, three submissions one after another: the cost of one, without a queue.
                alone = {
                    "builtin": lambda: [builtin_body()] * 3,
                    "probe": lambda: [probe_body(teachers.new()) for _ in range(3)],
                    "probe_cached": lambda: [warmup["probe"]] * 3,
                }
                alone_p50 = {kind: _alone(api.url, key, alone[kind](), clients) for kind in kinds}
                fresh = probe_body(teachers.new())  # never checked: the burst's first submission probes it
            bodies = {"builtin": builtin_body(), "probe": fresh, "probe_cached": fresh}
            sizes = {"builtin": args.jobs, "probe": args.probe_jobs, "probe_cached": args.jobs}
            out = REPO / "bench" / "out"
            out.mkdir(exist_ok=True)
            raw = out / "submit_burst.pyspy.txt"
            # Repeats of a burst are named r2-builtin, …: the accounting finds a burst's rows by prefix.
            runs = [(kind, kind) for kind in kinds] + [
                (kind, f"r{n}-{kind}") for n in range(2, args.repeat + 1) for kind in kinds if kind != "probe"
            ]
            for kind, name in runs:
                body = bodies[kind]
                load = [round(x, 2) for x in os.getloadavg()]
                print(f"{name} burst, load average {load}", flush=True)
                queued_before = queue_length(redis_url)
                cpu_before = process_cpu_seconds(api.process.pid)
                profiled = name == "builtin" and not args.no_profile
                with profiling(api.process.pid, raw, gil=args.gil, rate=args.rate) if profiled else nullcontext():
                    stats = burst(api.url, key, body, jobs=sizes[kind], clients=args.clients, prefix=name, **clients)
                stats["api_cpu_ms_per_job"] = round(
                    1000 * (process_cpu_seconds(api.process.pid) - cpu_before) / stats["submitted"], 2
                )
                stats["load_avg_before"] = load
                stats["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
                stats["accounted"] = accounted(
                    database_url, redis_url, prefix=name, expected=stats["submitted"], queued_before=queued_before
                )
                stats["alone_p50_ms"] = alone_p50[kind]
                stats["profiled"] = profiled
                if profiled:
                    stats["profile"] = {"raw_stacks": str(raw.relative_to(REPO)), **summarize_stacks(raw, gil=args.gil)}
                results[name] = stats
                print(json.dumps({k: v for k, v in stats.items() if k != "profile"}), flush=True)
        finally:
            api.stop()

    for stats in results.values():
        stats["all_201"] = stats["statuses"] == {"201": stats["submitted"]}
        counts = stats["accounted"]
        stats["none_lost"] = (
            counts["rows"] == counts["dispatched_at_set"] == counts["queue_messages"] == stats["submitted"]
        )
        stats["p99_under_target"] = stats["p99_ms"] < TARGET_P99_MS
    result = {
        "machine": run_machine(load_before),
        "server": f"uvicorn, {args.workers} worker process(es), threadpool_size {args.threadpool or 'default'}, "
        "--no-access-log, DISTILLERY_AUTH=required; "
        "Postgres 15 and Redis 7 on localhost",
        "clients": f"{args.clients} x {args.client} HTTP/1.1 keep-alive ({args.loop})",
        "target": f"{args.jobs} submissions, {args.clients} clients: all 201, none lost, p99 < {TARGET_P99_MS:.0f} ms",
        **results,
    }
    default = (kinds == list(KINDS) and args.workers == 1 and args.client == "raw" and args.threadpool is None) and (
        args.repeat == 1 and not args.no_profile
    )
    threads = "" if args.threadpool is None else f"_t{args.threadpool}"
    repeats = "" if args.repeat == 1 else f"_x{args.repeat}"
    path = _write(result, "" if default else f"_w{args.workers}{threads}_{args.client}_{'_'.join(kinds)}{repeats}")
    print(f"\n(results in {path})\n")
    columns = ["submission", "alone p50 ms", "jobs", "clients", "all 201", "rows / dispatched / queued"]
    print("| " + " | ".join([*columns, "p50 ms", "p95 ms", "p99 ms", "max ms", "jobs/s", "API CPU ms/job"]) + " |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, s in results.items():
        a = s["accounted"]
        cells = [kind, s["alone_p50_ms"], s["submitted"], s["clients"], s["all_201"]]
        cells += [f"{a['rows']} / {a['dispatched_at_set']} / {a['queue_messages']}"]
        cells += [s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"], s["throughput_per_s"], s["api_cpu_ms_per_job"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if "profile" in results.get("builtin", {}):
        print(json.dumps(results["builtin"]["profile"]["percent_by_part_inclusive"], indent=1))


class Teachers:
    """Uploads of the small teacher, each with weights never seen before (so its check has not run yet)."""

    def __init__(self, http: httpx.Client, path: Path) -> None:
        self.http = http
        self.path = path
        self.count = 0

    def new(self) -> str:
        from safetensors.torch import load_file, save_file

        self.count += 1
        tensors = load_file(str(self.path))
        first = next(iter(tensors))
        tensors[first] = tensors[first] + self.count * 1e-3  # another file (sha256), the same shapes
        variant = self.path.with_name(f"teacher-{self.count}.safetensors")
        save_file(tensors, str(variant))
        with open(variant, "rb") as f:
            response = self.http.post("/v1/files", files={"file": (variant.name, f)}, data={"purpose": "teacher"})
        response.raise_for_status()
        return str(response.json()["id"])


def _alone(url: str, key: str, bodies: list[dict[str, Any]], clients: dict[str, str]) -> float:
    """The median of these submissions sent one after another by one client."""
    latencies = []
    for n, body in enumerate(bodies):
        stats = burst(url, key, body, jobs=1, clients=1, prefix=f"alone-{uuid4().hex[:8]}-{n}", **clients)
        latencies.append(stats["p50_ms"])
    return float(np.median(latencies))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far (/proc/PID/stat) of the process, all its threads, and of its live
    children (uvicorn's worker processes, with --workers above 1)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return own + sum(process_cpu_seconds(child) for child in children)


def _write(result: dict[str, Any], suffix: str) -> Path:
    """bench/results/submit_burst.json for the default run, a file of its own for any other."""
    from bench.common import write_result

    return write_result(f"submit_burst{suffix}", result)


if __name__ == "__main__":
    main()
