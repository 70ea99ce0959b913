"""Downloads: 4 clients fetching a 512 MB artifact at once from one API process: its memory and each stream's speed.

A job with one 512 MB artifact (random bytes, so nothing compresses) is written straight into a scratch
Postgres database and the artifact folder, and one uvicorn process serves it (auth off: the default tenant).
While 4 clients download the whole file at once (bytes counted and dropped), the API's resident memory
(VmRSS in /proc/PID/status) is sampled every 50 ms. Then one more download alone checks the sha256 of what
arrives, and one Range request (128 MB from the middle) checks the 206 and its bytes.

The clients are curl by default: an ordinary HTTP client that costs a small fraction of a core, so what is
measured is the server. `--client httpx` runs Python clients instead (threads, httpx streaming, 1 MiB
reads); on this 2-core machine they need more CPU than the server does and measure themselves as much as
it. Loopback only; the clients share the machine's cores with the server, so speeds are lower bounds.

Targets: the API's RSS grows by less than 64 MB during the 4 downloads; every stream gets at least 200 MB/s.

    python -m bench.downloads [--size-mb 512] [--clients 4] [--client curl|httpx]

Needs Postgres at DISTILLERY_TEST_POSTGRES (bench/services.py; default: the standard local port). Writes
bench/results/downloads.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.services import postgres_database, run_machine
from tests.e2e.processes import service_env, start_api

DATABASE = "distillery_downloads"
TENANT = "local"  # DISTILLERY_AUTH=off: every request is the default tenant's
NAME = "student.safetensors"
MB = 1024 * 1024
RANGE = (100 * MB, 228 * MB - 1)  # 128 MB from the middle, inclusive end as in the header
TARGET_RSS_GROWTH_MB = 64
TARGET_STREAM_MB_S = 200


def write_artifact(folder: Path, size: int) -> tuple[str, str]:
    """`size` random bytes at folder/jobs/<job>/student.safetensors; (job id, sha256)."""
    from app.models import new_id

    job_id = new_id("job_")
    path = folder / "jobs" / job_id / NAME
    path.parent.mkdir(parents=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // (8 * MB)):
            block = os.urandom(8 * MB)
            digest.update(block)
            f.write(block)
    return job_id, digest.hexdigest()


def insert_rows(database_url: str, *, job_id: str, size: int, sha256: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from app.models import Artifact, Job, utcnow

    engine = create_engine(database_url)
    now = utcnow()
    with Session(engine) as session, session.begin():
        session.add(
            Job(
                id=job_id,
                tenant_id=TENANT,
                status="succeeded",
                spec={},
                progress={},
                metrics={},
                created_at=now,
                updated_at=now,
                finished_at=now,
            )
        )
        session.flush()
        storage_path = f"jobs/{job_id}/{NAME}"
        session.add(
            Artifact(
                job_id=job_id,
                tenant_id=TENANT,
                name=NAME,
                bytes=size,
                sha256=sha256,
                format="safetensors",
                storage_path=storage_path,
            )
        )
    engine.dispose()


class RssSampler(threading.Thread):
    """VmRSS of `pid` every `interval` seconds, with the time it was read."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (perf_counter, bytes)
        self._done = threading.Event()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.perf_counter(), self.rss()))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peak(self, start: float, end: float) -> int:
        return max(rss for t, rss in self.samples if start <= t <= end)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (fields 14 and 15 of /proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def httpx_download(url: str, *, headers: dict[str, str] | None = None, hash_it: bool = False) -> dict[str, Any]:
    """Stream the response with httpx, count (and optionally hash) the bytes, drop them."""
    import httpx

    digest = hashlib.sha256()
    received = 0
    with httpx.Client(timeout=300) as http:
        started = time.perf_counter()
        with http.stream("GET", url, headers=headers) as response:
            for chunk in response.iter_raw(MB):
                received += len(chunk)
                if hash_it:
                    digest.update(chunk)
        seconds = time.perf_counter() - started
    content_range = response.headers.get("content-range")
    return _outcome(response.status_code, received, started, seconds, digest if hash_it else None, content_range)


def curl_download(url: str, *, headers: dict[str, str] | None = None, hash_it: bool = False) -> dict[str, Any]:
    """`curl` into /dev/null, or into a pipe this process hashes; its own report (status, bytes, response
    headers) comes on stderr as JSON."""
    command = ["curl", "-s", "-S", "-o", "-" if hash_it else "/dev/null", "-w", "%{stderr}%{json}\n%{header_json}"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    digest = hashlib.sha256()
    started = time.perf_counter()
    with subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        assert run.stdout is not None and run.stderr is not None
        if hash_it:
            while chunk := run.stdout.read(MB):
                digest.update(chunk)
        report = run.stderr.read().decode()
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"curl exited with {run.returncode}: {report[:500]}")
    summary, _, response_headers = report.partition("\n")
    stats, sent = json.loads(summary), json.loads(response_headers)
    range_header = sent.get("content-range", [None])[0]
    status, received = int(stats["http_code"]), int(stats["size_download"])
    return _outcome(status, received, started, seconds, digest if hash_it else None, range_header)


def _outcome(
    status: int, received: int, started: float, seconds: float, digest: Any, content_range: str | None
) -> dict[str, Any]:
    return {
        "status": status,
        "bytes": received,
        "seconds": round(seconds, 3),
        "mb_per_s": round(received / MB / seconds, 1),
        "sha256": digest.hexdigest() if digest is not None else None,
        "content_range": content_range,
        "started": started,
        "ended": started + seconds,
    }


CLIENTS: dict[str, Callable[..., dict[str, Any]]] = {"curl": curl_download, "httpx": httpx_download}


def concurrent(download: Callable[..., dict[str, Any]], url: str, clients: int) -> list[dict[str, Any]]:
    """`clients` whole downloads at once, one thread each (a curl download waits on its process there)."""
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    go = threading.Barrier(clients)

    def client(i: int) -> None:
        go.wait()
        results[i] = download(url)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def client_cpu_seconds() -> float:
    """CPU of this process (the httpx clients' threads) and of its finished children (the curl processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="curl", help="who downloads (default curl)")
    args = parser.parse_args()
    if args.client == "curl" and shutil.which("curl") is None:
        parser.error("curl is not installed: install it, or pass --client httpx")
    download = CLIENTS[args.client]
    load_before = os.getloadavg()
    size = args.size_mb * MB

    database_url = postgres_database(DATABASE)
    with tempfile.TemporaryDirectory(prefix="distillery-downloads-") as tmp:
        root = Path(tmp)
        job_id, sha256 = write_artifact(root / "artifacts", size)
        insert_rows(database_url, job_id=job_id, size=size, sha256=sha256)
        env = service_env(
            database_url=database_url,
            broker_url="memory://",
            auth="off",
            artifact_dir=str(root / "artifacts"),
            upload_dir=str(root / "files"),
            broker_dir=str(root / "broker"),
        )
        api = start_api(env, root / "logs", extra_args=["--no-access-log", "--log-level", "warning"])
        url = f"{api.url}/v1/jobs/{job_id}/artifacts/{NAME}"
        sampler = RssSampler(api.process.pid)
        try:
            # Warm-up: the route, the session, the file's first pages; then the resting RSS for a second.
            warm = download(url, headers={"Range": "bytes=0-1048575"})
            assert warm["status"] == 206, warm
            sampler.start()
            time.sleep(1.0)
            baseline = max(rss for _, rss in sampler.samples)
            load_during = os.getloadavg()
            print(
                f"{args.clients} {args.client} downloads of {args.size_mb} MB, load average {load_during}", flush=True
            )
            server_cpu, client_cpu = cpu_seconds(api.process.pid), client_cpu_seconds()
            streams = concurrent(download, url, args.clients)
            server_cpu, client_cpu = cpu_seconds(api.process.pid) - server_cpu, client_cpu_seconds() - client_cpu
            start = min(s["started"] for s in streams)
            end = max(s["ended"] for s in streams)
            peak = sampler.peak(start, end + 0.1)
            alone = download(url, hash_it=True)
            ranged = download(url, headers={"Range": f"bytes={RANGE[0]}-{RANGE[1]}"}, hash_it=True)
            time.sleep(0.5)
            after = sampler.rss()
        finally:
            if sampler.is_alive():
                sampler.stop()
            api.stop()
        with open(root / "artifacts" / "jobs" / job_id / NAME, "rb") as f:
            f.seek(RANGE[0])
            range_sha = hashlib.sha256(f.read(RANGE[1] - RANGE[0] + 1)).hexdigest()

    for s in [*streams, alone, ranged]:
        s.pop("started")
        s.pop("ended")
    growth_mb = (peak - baseline) / MB
    slowest = min(s["mb_per_s"] for s in streams)
    result = {
        "machine": run_machine(load_before),
        "server": "uvicorn, 1 process, --no-access-log, DISTILLERY_AUTH=off; Postgres 15 on localhost; loopback",
        "client": args.client,
        "artifact_mb": args.size_mb,
        "clients": args.clients,
        "load_avg_at_start_of_downloads": [round(x, 2) for x in load_during],
        "rss_baseline_mb": round(baseline / MB, 1),
        "rss_peak_mb": round(peak / MB, 1),
        "rss_growth_mb": round(growth_mb, 1),
        "rss_after_mb": round(after / MB, 1),
        "rss_samples": len(sampler.samples),
        "streams": streams,
        "all_complete": all(s["status"] == 200 and s["bytes"] == size for s in streams),
        "aggregate_mb_per_s": round(args.clients * size / MB / (end - start), 1),
        # Cores busy during the concurrent downloads (of the machine's 2): the API process, and the clients.
        "api_cores_used": round(server_cpu / (end - start), 2),
        "client_cores_used": round(client_cpu / (end - start), 2),
        "alone_with_sha256": {**alone, "sha256_matches": alone["sha256"] == sha256},
        "range": {
            **ranged,
            "requested": f"bytes={RANGE[0]}-{RANGE[1]}",
            "sha256_matches": ranged["sha256"] == range_sha,
        },
        "targets": {
            "rss_growth_under_mb": TARGET_RSS_GROWTH_MB,
            "rss_met": growth_mb < TARGET_RSS_GROWTH_MB,
            "stream_at_least_mb_s": TARGET_STREAM_MB_S,
            "speed_met": slowest >= TARGET_STREAM_MB_S,
        },
    }
    from bench.common import write_result

    path = write_result("downloads" if args.client == "curl" else f"downloads_{args.client}", result)
    print(f"\n(results in {path})\n")
    print("| what | result |")
    print("|---|---|")
    print(f"| API RSS: resting → peak during {args.clients} downloads | {baseline / MB:.0f} MB → {peak / MB:.0f} MB "
          f"(+{growth_mb:.1f} MB; target < {TARGET_RSS_GROWTH_MB}) |")  # fmt: skip
    speeds = ", ".join(f"{s['mb_per_s']:.0f}" for s in streams)
    cores = f"API {result['api_cores_used']} cores, clients {result['client_cores_used']}"
    label = f"each of {args.clients} {args.client} streams, MB/s"
    print(f"| {label} | {speeds} (aggregate {result['aggregate_mb_per_s']:.0f}; "
          f"target ≥ {TARGET_STREAM_MB_S} each; {cores}) |")  # fmt: skip
    matches = result["alone_with_sha256"]["sha256_matches"]
    print(f"| one download alone, hashed here (sha256 matches: {matches}) | {alone['mb_per_s']:.0f} MB/s |")
    print(f"| Range {result['range']['requested']} | {ranged['status']}, {ranged['content_range']}, "
          f"{ranged['mb_per_s']:.0f} MB/s, bytes match: {result['range']['sha256_matches']} |")  # fmt: skip


if __name__ == "__main__":
    main()
