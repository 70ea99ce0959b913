"""Downloads: 4 clients fetching a 512 MB artifact at once from one API process: its memory and each stream's speed.

A job with one 512 MB artifact (random bytes, so nothing compresses) is written straight into a scratch
Postgres database and the artifact folder, and one uvicorn process serves it (auth off: the default tenant).
While 4 clients (threads, httpx streaming, bytes counted and dropped) download the whole file at once, the
API's resident memory (VmRSS in /proc/PID/status) is sampled every 50 ms. Then one more download alone
checks the sha256 of what arrives, and one Range request (128 MB from the middle) checks the 206 and its bytes.
Loopback only; the clients share the machine's 2 cores with the server, so speeds are lower bounds.

Targets: the API's RSS grows by less than 64 MB during the 4 downloads; every stream gets at least 200 MB/s.

    python -m bench.downloads [--size-mb 512] [--clients 4]

Needs Postgres on its standard local port. Writes bench/results/downloads.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

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


def download(url: str, *, headers: dict[str, str] | None = None, hash_it: bool = False) -> dict[str, Any]:
    """Stream the response, count (and optionally hash) the bytes, drop them."""
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
    return {
        "status": response.status_code,
        "bytes": received,
        "seconds": round(seconds, 3),
        "mb_per_s": round(received / MB / seconds, 1),
        "sha256": digest.hexdigest() if hash_it else None,
        "content_range": response.headers.get("content-range"),
        "started": started,
        "ended": started + seconds,
    }


def concurrent(url: str, clients: int) -> list[dict[str, Any]]:
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


def with_curl(url: str, clients: int, api_pid: int) -> dict[str, Any]:
    """The same concurrent downloads with curl (C, a small fraction of a core): what the server gives when
    the clients cost little, the control for the Python clients above, which share the 2 cores with it."""
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        return {"skipped": "no curl"}
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", url]
    server_cpu, started = cpu_seconds(api_pid), time.perf_counter()
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    outputs = [run.communicate()[0].split() for run in runs]
    wall = time.perf_counter() - started
    return {
        "statuses": [int(code) for code, _, _ in outputs],
        "mb_per_s": [round(float(speed) / MB, 1) for _, _, speed in outputs],
        "api_cores_used": round((cpu_seconds(api_pid) - server_cpu) / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
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
            print(f"{args.clients} downloads of {args.size_mb} MB, load average {os.getloadavg()}", flush=True)
            server_cpu, client_cpu = cpu_seconds(api.process.pid), time.process_time()
            streams = concurrent(url, args.clients)
            server_cpu, client_cpu = cpu_seconds(api.process.pid) - server_cpu, time.process_time() - client_cpu
            start = min(s["started"] for s in streams)
            end = max(s["ended"] for s in streams)
            peak = sampler.peak(start, end + 0.1)
            curl = with_curl(url, args.clients, api.process.pid)
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
        "artifact_mb": args.size_mb,
        "clients": args.clients,
        "rss_baseline_mb": round(baseline / MB, 1),
        "rss_peak_mb": round(peak / MB, 1),
        "rss_growth_mb": round(growth_mb, 1),
        "rss_after_mb": round(after / MB, 1),
        "rss_samples": len(sampler.samples),
        "streams": streams,
        "all_complete": all(s["status"] == 200 and s["bytes"] == size for s in streams),
        "aggregate_mb_per_s": round(args.clients * size / MB / (end - start), 1),
        # Cores busy during the concurrent downloads (of the machine's 2): the API process, and these clients.
        "api_cores_used": round(server_cpu / (end - start), 2),
        "client_cores_used": round(client_cpu / (end - start), 2),
        "curl_control": curl,
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

    path = write_result("downloads", result)
    print(f"\n(results in {path})\n")
    print("| what | result |")
    print("|---|---|")
    print(f"| API RSS: resting → peak during {args.clients} downloads | {baseline / MB:.0f} MB → {peak / MB:.0f} MB "
          f"(+{growth_mb:.1f} MB; target < {TARGET_RSS_GROWTH_MB}) |")  # fmt: skip
    speeds = ", ".join(f"{s['mb_per_s']:.0f}" for s in streams)
    cores = f"API {result['api_cores_used']} cores, clients {result['client_cores_used']}"
    print(f"| each of {args.clients} streams, MB/s | {speeds} (aggregate {result['aggregate_mb_per_s']:.0f}; "
          f"target ≥ {TARGET_STREAM_MB_S} each; {cores}) |")  # fmt: skip
    if "mb_per_s" in curl:
        speeds = ", ".join(f"{v:.0f}" for v in curl["mb_per_s"])
        print(f"| the same with {args.clients} curl clients, MB/s | {speeds} (API {curl['api_cores_used']} cores) |")
    matches = result["alone_with_sha256"]["sha256_matches"]
    print(f"| one download alone (sha256 matches: {matches}) | {alone['mb_per_s']:.0f} MB/s |")
    print(f"| Range {result['range']['requested']} | {ranged['status']}, {ranged['content_range']}, "
          f"{ranged['mb_per_s']:.0f} MB/s, bytes match: {result['range']['sha256_matches']} |")  # fmt: skip


if __name__ == "__main__":
    main()
