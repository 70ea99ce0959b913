"""Faults of the services around the stack, injected into real processes: nothing accepted is lost.

The whole production shape runs here: uvicorn and Celery workers as processes (tests/e2e/processes.py), on a
PRIVATE Postgres and a PRIVATE Redis (tests/private_services.py) that these tests stop, kill and restart;
the machine's shared servers are never touched. The module has one database, API key (the stack runs with
DISTILLERY_AUTH=required) and API process, which lives through every fault; each test starts its own
workers, which are killed after it, and the jobs it left unfinished are closed.

- Redis killed and restarted empty while jobs wait in it: the reconciler sends them again, all succeed;
- Postgres stopped while a job trains, past the job's lease, then started: the job succeeds, once, with
  every metric row stored once (the engine's metrics.jsonl is the reference);
- the API answers 503 `service_unavailable` with Retry-After while Postgres is down or restarting (never
  500), and serves again after;
- the whole Celery worker killed with SIGKILL mid-training: a new worker takes the job over after its
  lease and resumes it from its checkpoint;
- two workers and duplicated messages: each job trains exactly once;
- DELETE of a file while jobs naming it are submitted: either the jobs were accepted and the DELETE is a
  409 `file_in_use`, or the DELETE won and the submissions are 422: never both, never a 500.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import service_unavailable
from tests.e2e.client import FINISHED, job_body, submit, upload, upload_digits, wait_until
from tests.e2e.conftest import Digits, create_key, stack_env
from tests.e2e.conftest import digits as digits  # noqa: F401  (the fixture, shared with the e2e tests)
from tests.e2e.processes import Service, start_api, start_worker
from tests.private_services import (
    PrivatePostgres,
    PrivateRedis,
    ServiceMissing,
    start_private_postgres,
    start_private_redis,
)
from tests.worker.test_faults import _engine_pids

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

TENANT = "faults"
LEASE_SECONDS = 4
# Every job pays ~10 s (starting torch, evaluating the teacher, exporting ONNX); an epoch at batch 4 trains
# ~0.7-1.5 s here. Long jobs are hit mid-training; short ones are the cheapest job there is.
LONG_EPOCHS, LONG_BATCH = 5, 4
SHORT_EPOCHS, SHORT_BATCH = 1, 64
FAULTS: Counter[str] = Counter()  # what was injected and seen, printed at the end of the module
OBSERVED: list[str] = []


# --- the private services and one stack on them ------------------------------------------------------------


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    try:
        server = start_private_postgres()
    except ServiceMissing as exc:
        service_unavailable("Postgres (private instance)", str(exc))
    yield server
    server.close()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    try:
        server = start_private_redis()
    except ServiceMissing as exc:
        service_unavailable("Redis (private instance)", str(exc))
    yield server
    server.close()


@dataclass
class FaultStack:
    pg: PrivatePostgres
    redis: PrivateRedis
    database_url: str
    env: dict[str, str]
    key: str
    root: Path
    api: Service
    files: tuple[str, str, str]  # the digits teacher, train and validation files, uploaded once
    background: ThreadPoolExecutor
    workers: list[Service] = field(default_factory=list)  # this test's

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def start_worker(self, **settings: str) -> Service:
        """A Celery worker on this stack, with DISTILLERY_* overrides (`lease_seconds="30"`)."""
        env = {**self.env, **{f"DISTILLERY_{k.upper()}": v for k, v in settings.items()}}
        worker = start_worker(env, self.root / "logs" / f"worker-{uuid.uuid4().hex[:6]}")
        self.workers.append(worker)
        return worker

    def starting_worker(self, **settings: str) -> Future[Service]:
        """start_worker in the background: it takes seconds (torch), which the test spends submitting."""
        return self.background.submit(self.start_worker, **settings)

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=timeout, headers=self.headers)

    def query(self, sql: str, **params: Any) -> list[Any]:
        engine = create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                result = connection.execute(text(sql), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            engine.dispose()

    def redis_client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.env["DISTILLERY_BROKER_URL"], socket_timeout=5, socket_connect_timeout=5)

    def logs(self) -> str:
        parts = [f"--- {s.name} ({s.log})\n{s.output(4000)}" for s in [self.api, *self.workers]]
        return "\n".join([*parts, f"--- postgres\n{self.pg.output(2000)}", f"--- redis\n{self.redis.output(1000)}"])


def _kill(service: Service) -> None:
    """SIGKILL the service's whole process group (it leads a session of its own)."""
    if service.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        service.process.wait(timeout=10)


@pytest.fixture(scope="module")
def fault_stack(
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    digits: Digits,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FaultStack]:
    """One database, API key and API for the module (the API lives through every fault); workers per test."""
    from app.migrate import upgrade_to_head

    engine = create_engine(private_postgres.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        connection.execute(text('CREATE DATABASE "distillery_faults"'))
    engine.dispose()
    database_url = private_postgres.url("distillery_faults")
    upgrade_to_head(database_url)
    root = tmp_path_factory.mktemp("faults")
    env = {
        **stack_env(database_url, private_redis.url(0), root),
        "DISTILLERY_AUTH": "required",
        "DISTILLERY_LEASE_SECONDS": str(LEASE_SECONDS),
        "DISTILLERY_MAX_CONCURRENT_JOBS": "100",
        "DISTILLERY_BROKER_TIMEOUT_SECONDS": "1",
        "DISTILLERY_DB_POOL_TIMEOUT": "5",
        "OMP_NUM_THREADS": "1",  # two shared cores: one thread per training child
    }
    background = ThreadPoolExecutor(4, thread_name_prefix="faults")
    starting_api = background.submit(start_api, env, root / "logs")
    try:
        key = create_key(env, TENANT)
    except BaseException:
        with contextlib.suppress(Exception):
            _kill(starting_api.result(timeout=180))
        raise
    api = starting_api.result(timeout=180)
    try:
        with httpx.Client(base_url=api.url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
            files = upload_digits(http, digits)
        yield FaultStack(private_postgres, private_redis, database_url, env, key, root, api, files, background)
    finally:
        _kill(api)
        background.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def stack(fault_stack: FaultStack) -> Iterator[FaultStack]:
    """The module's stack with its services up and Redis empty; this test's workers are killed after it, and
    the jobs it left unfinished are closed so that the next test's workers do not run them."""
    if not fault_stack.pg.running():  # a test that failed with the server stopped
        fault_stack.pg.start()
    if fault_stack.redis.process is None:
        fault_stack.redis.start()
    fault_stack.redis_client().flushall()
    yield fault_stack
    for worker in fault_stack.workers:
        _kill(worker)
    fault_stack.workers.clear()
    if not fault_stack.pg.running():
        fault_stack.pg.start()
    fault_stack.query(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL "
        "WHERE status IN ('queued', 'running', 'cancelling')"
    )


# --- helpers ---------------------------------------------------------------------------------------------


def _wait(condition: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs() if logs else ''}")
        time.sleep(0.2)


def _trained_epochs(http: httpx.Client, stack: FaultStack, job_id: str, epochs: int) -> None:
    """Wait until the job has trained `epochs` epochs (their checkpoint is written) and is still training."""

    def done() -> bool:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), (job, stack.logs())
        progress = job["progress"]
        return bool((progress.get("epoch") or 0) > epochs or (progress.get("fraction") or 0) >= 1)

    _wait(done, 120, f"job {job_id} to train {epochs} epoch(s)", stack.logs)
    _wait(
        lambda: stack.query("SELECT 1 FROM job_events WHERE job_id = :j AND type = 'checkpoint'", j=job_id),
        30,
        "a checkpoint event",
        stack.logs,
    )
    assert _engine_pids(job_id), f"job {job_id} should still be training"


def _events(stack: FaultStack, job_id: str) -> list[Any]:
    return stack.query("SELECT type, data FROM job_events WHERE job_id = :j ORDER BY id", j=job_id)


def _check_metrics_once(stack: FaultStack, job_id: str, *, epochs: int) -> int:
    """Every metric row the engine wrote (its metrics.jsonl) is in the database exactly once; returns the count."""
    rows = stack.query("SELECT name, step, epoch, value FROM job_metrics WHERE job_id = :j", j=job_id)
    stored = Counter((r.name, r.step, r.epoch) for r in rows)
    assert stored and max(stored.values()) == 1, f"metric rows stored twice: {stored.most_common(3)}"
    jsonl = stack.root / "artifacts" / "jobs" / job_id / "metrics.jsonl"
    written = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    assert set(stored) == {(m["name"], m["step"], m["epoch"]) for m in written}, "metric rows lost or extra"
    values = {(r.name, r.step, r.epoch): r.value for r in rows}
    for m in written:
        assert values[(m["name"], m["step"], m["epoch"])] == pytest.approx(m["value"], rel=1e-6, abs=1e-9)
    assert {r.epoch for r in rows if r.name == "train/loss"} == set(range(1, epochs + 1))
    return len(rows)


def _submit_all(stack: FaultStack, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit the jobs at once (each submission runs the probe for seconds), in order of the bodies."""

    def one(body: dict[str, Any]) -> dict[str, Any]:
        with stack.client() as client:
            return submit(client, body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def _finished(http: httpx.Client, stack: FaultStack, job_id: str, timeout: float = 180) -> dict[str, Any]:
    return dict(wait_until(http, job_id, FINISHED, timeout=timeout, logs=stack.logs))


# --- the faults ------------------------------------------------------------------------------------------


def test_redis_restarted_empty_while_jobs_are_queued(stack: FaultStack) -> None:
    body = job_body(*stack.files, epochs=SHORT_EPOCHS, batch_size=SHORT_BATCH)
    # One worker: it runs one of the jobs while the others wait in Redis behind it.
    starting = stack.starting_worker(redispatch_after_seconds="5")
    jobs = _submit_all(stack, [body] * 3)
    worker = starting.result(timeout=180)
    with stack.client() as http:
        running = _wait(
            lambda: [j["id"] for j in jobs if _engine_pids(j["id"])], 120, "a job to start training", stack.logs
        )
        broker = stack.redis_client()
        waiting = broker.llen("train")
        assert waiting >= len(jobs) - 1, "the other jobs' messages should be waiting in Redis"

        stack.redis.restart_empty()  # SIGKILL, then a new empty redis-server on the same port
        restarted_at = len(worker.output(max_chars=10**8))
        FAULTS["Redis restarted empty"] += 1
        FAULTS["messages lost with Redis"] += waiting
        assert broker.dbsize() == 0, "the new Redis should start empty"
        queued = [j for j in jobs if j["id"] not in running]
        assert [http.get(f"/v1/jobs/{j['id']}").json()["status"] for j in queued] == ["queued"] * len(queued)

        finished = [_finished(http, stack, j["id"]) for j in jobs]
    FAULTS["jobs lost"] += sum(j["status"] != "succeeded" for j in finished)
    assert [j["status"] for j in finished] == ["succeeded"] * len(jobs), stack.logs()
    assert [j["attempt"] for j in finished] == [1] * len(jobs)
    for job in jobs:
        assert [e.type for e in _events(stack, job["id"])].count("started") == 1, job["id"]  # trained once
    after = worker.output(max_chars=10**8)[restarted_at:]
    resent = [line for line in after.splitlines() if "reconciler: re-sent" in line]
    for job in queued:  # their messages were sent again after the restart
        assert any(job["id"] in line for line in resent), (job["id"], after[-4000:])
    OBSERVED.append(f"Redis restart: {waiting} waiting messages lost, {len(jobs)}/{len(jobs)} jobs succeeded once")


def test_postgres_stopped_past_the_lease_while_a_job_trains(stack: FaultStack) -> None:
    with stack.client() as http:
        starting = stack.starting_worker()
        job = submit(http, job_body(*stack.files, epochs=LONG_EPOCHS, batch_size=LONG_BATCH))
        worker = starting.result(timeout=180)
        _trained_epochs(http, stack, job["id"], 1)

        stopped = time.monotonic()
        stack.pg.stop("fast")
        FAULTS["Postgres stopped"] += 1
        try:
            time.sleep(LEASE_SECONDS + 2)  # the worker's lease runs out while it cannot renew it
            trained_through = bool(_engine_pids(job["id"]))  # or it finished and its final write waits
        finally:
            stack.pg.start()
        outage = time.monotonic() - stopped
        assert outage > LEASE_SECONDS
        job = _finished(http, stack, job["id"])
    assert job["status"] == "succeeded" and job["attempt"] == 1, (job, stack.logs())
    # The outage was felt, and the syncs backed off (they once retried every tick, ten times a second).
    failed_syncs = worker.output(max_chars=10**8).count("could not write progress (will retry")
    assert 1 <= failed_syncs <= outage + 3, (failed_syncs, outage)
    events = _events(stack, job["id"])
    types = [e.type for e in events]
    assert types.count("started") == 1 and types[-1] == "succeeded", types
    # Nothing the run reported during the outage was lost or written twice: one checkpoint event per epoch.
    assert sorted(e.data["epoch"] for e in events if e.type == "checkpoint") == list(range(1, LONG_EPOCHS + 1))
    rows = _check_metrics_once(stack, job["id"], epochs=LONG_EPOCHS)
    FAULTS["metric rows checked"] += rows
    OBSERVED.append(
        f"Postgres down {outage:.1f}s (lease {LEASE_SECONDS}s), "
        f"{'still training when it came back' if trained_through else 'training ended during the outage'}: "
        f"{failed_syncs} failed syncs, succeeded on attempt 1, {rows} metric rows stored once"
    )


def _expect_503(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.method, response.request.url, response.text)
    assert response.json()["error"]["code"] == "service_unavailable", response.text
    assert response.headers.get("retry-after") == "5", response.headers


def test_the_api_answers_503_while_postgres_is_down_and_recovers(stack: FaultStack, digits: Digits) -> None:
    body = job_body(*stack.files, epochs=SHORT_EPOCHS)
    with stack.client(timeout=30) as http:
        job = submit(http, body)  # no worker: it stays queued

        # Requests all through a restart: every answer is a 200 or a 503, never a 500.
        seen: Counter[int] = Counter()
        stop = threading.Event()

        def hammer() -> None:
            with stack.client(timeout=30) as client:
                while not stop.is_set():
                    response = client.get(f"/v1/jobs/{job['id']}")
                    seen[response.status_code] += 1
                    if response.status_code != 200:
                        _expect_503(response)
                    time.sleep(0.02)

        requests: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", "/v1/jobs", None),
            ("GET", f"/v1/jobs/{job['id']}", None),
            ("GET", f"/v1/jobs/{job['id']}/events", None),
            ("GET", f"/v1/jobs/{job['id']}/metrics", None),
            ("POST", "/v1/jobs", body),
            ("POST", f"/v1/jobs/{job['id']}/cancel", None),
            ("GET", "/v1/files", None),
            ("GET", f"/v1/files/{stack.files[0]}", None),
            ("DELETE", f"/v1/files/{stack.files[1]}", None),
        ]
        with ThreadPoolExecutor(1) as pool:
            hammering = pool.submit(hammer)
            time.sleep(0.5)
            stack.pg.stop("fast")
            FAULTS["Postgres stopped"] += 1
            try:
                for method, path, json_body in requests:
                    _expect_503(http.request(method, path, json=json_body))
                with open(digits.validation, "rb") as f:
                    _expect_503(http.post("/v1/files", files={"file": ("v.npz", f)}, data={"purpose": "dataset"}))
                assert http.get("/healthz").status_code == 200  # alive, not ready
                assert http.get("/readyz").status_code == 503
            finally:
                stack.pg.start()
            _wait(lambda: seen[200] and http.get(f"/v1/jobs/{job['id']}").status_code == 200, 30, "recovery")
            stop.set()
            hammering.result(timeout=30)
        assert set(seen) == {200, 503} and seen[503] > 0, seen
        FAULTS["503 answers"] += seen[503] + len(requests) + 1

        # The data is intact and writes work again.
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
        assert http.get("/readyz").status_code == 200
        submit(http, body)
    assert "unhandled error" not in stack.api.output(max_chars=10**8), stack.api.output()
    OBSERVED.append(f"API during a Postgres restart: {dict(seen)} (+{len(requests) + 1} checked 503s), no 500")


def test_a_worker_killed_with_sigkill_is_taken_over_from_the_checkpoint(stack: FaultStack) -> None:
    with stack.client() as http:
        starting = stack.starting_worker()
        job = submit(http, job_body(*stack.files, epochs=LONG_EPOCHS, batch_size=LONG_BATCH))
        first = starting.result(timeout=180)
        _trained_epochs(http, stack, job["id"], 1)

        _kill(first)  # the Celery process and its group: no warm shutdown, no requeue
        FAULTS["worker SIGKILLs"] += 1
        _wait(lambda: not _engine_pids(job["id"]), 30, "the orphaned training child to exit", stack.logs)
        orphaned = http.get(f"/v1/jobs/{job['id']}").json()
        assert orphaned["status"] == "running" and orphaned["attempt"] == 1

        second = stack.start_worker()
        job = _finished(http, stack, job["id"])
    assert job["status"] == "succeeded" and job["attempt"] == 2, (job, stack.logs())
    started = [e.data for e in _events(stack, job["id"]) if e.type == "started"]
    assert [s["resumed"] for s in started] == [False, True], started
    assert started[0]["worker_id"] != started[1]["worker_id"]
    assert f"job {job['id']}: attempt 2 claimed" in second.output(max_chars=10**8)
    rows = _check_metrics_once(stack, job["id"], epochs=LONG_EPOCHS)
    FAULTS["metric rows checked"] += rows
    OBSERVED.append(f"worker SIGKILL: taken over on attempt 2, resumed from the checkpoint, {rows} metric rows once")


def test_two_workers_and_duplicated_messages_train_each_job_once(stack: FaultStack) -> None:
    from celery import Celery

    duplicates_each = 3
    # A lease long enough that none expires on this busy machine: a takeover would be a second run.
    starting = [stack.starting_worker(lease_seconds="30") for _ in range(2)]
    jobs = _submit_all(stack, [job_body(*stack.files, epochs=SHORT_EPOCHS, batch_size=SHORT_BATCH)] * 2)
    sender = Celery("faults", broker=stack.env["DISTILLERY_BROKER_URL"])
    try:
        for job in jobs:
            for _ in range(duplicates_each):
                sender.send_task("distillery.run_job", args=[job["id"]], queue="train")
    finally:
        sender.close()
    FAULTS["duplicate messages"] += duplicates_each * len(jobs)
    workers = [f.result(timeout=180) for f in starting]
    with stack.client() as http:
        finished = [_finished(http, stack, job["id"]) for job in jobs]
    assert [j["status"] for j in finished] == ["succeeded"] * len(jobs), stack.logs()
    assert [j["attempt"] for j in finished] == [1] * len(jobs)
    trained_by = []
    for job in jobs:
        started = [e.data for e in _events(stack, job["id"]) if e.type == "started"]
        assert len(started) == 1, (job["id"], started)
        trained_by.append(started[0]["worker_id"])
        _check_metrics_once(stack, job["id"], epochs=SHORT_EPOCHS)
    broker = stack.redis_client()
    _wait(lambda: broker.llen("train") == 0, 30, "the queue to drain", stack.logs)

    def count(text: str) -> int:
        return sum(w.output(max_chars=10**8).count(text) for w in workers)

    _wait(lambda: count("is not claimable") >= duplicates_each * len(jobs), 30, "every duplicate", stack.logs)
    assert count("claimed by") == len(jobs), stack.logs()
    FAULTS["duplicates trained"] += count("claimed by") - len(jobs)
    OBSERVED.append(
        f"2 workers, {duplicates_each} extra messages per job: {len(jobs)} jobs trained once each "
        f"(by {len(set(trained_by))} worker(s)), {count('is not claimable')} messages skipped"
    )


def test_deleting_a_file_while_jobs_naming_it_are_submitted(stack: FaultStack, digits: Digits) -> None:
    submitters = 2
    outcomes: Counter[str] = Counter()
    teacher_id, _, validation_id = stack.files

    def fresh_train_file() -> Path:
        """The training set with one value nudged: bytes no check has seen, so every race's submissions
        run the probe (a passed check is remembered per file sha256, app/checks/verdicts.py)."""
        path = digits.train.with_name(f"train-{uuid.uuid4().hex[:8]}.npz")
        with np.load(digits.train) as data:
            arrays = {name: data[name].copy() for name in data.files}
        arrays["x"].flat[0] += np.float32(uuid.uuid4().int % 1000 + 1) * np.float32(1e-6)
        np.savez(path, **arrays)
        return path

    def race(http: httpx.Client, delay: float | None) -> tuple[list[httpx.Response], httpx.Response, str, float]:
        """`submitters` jobs naming a new file, and its DELETE `delay` s after they start (None: after)."""
        train_id = upload(http, fresh_train_file(), "dataset")["id"]
        body = job_body(teacher_id, train_id, validation_id, epochs=1)
        go = threading.Barrier(submitters + 1)

        def post() -> httpx.Response:
            with stack.client() as client:
                go.wait()
                return client.post("/v1/jobs", json=body)

        with ThreadPoolExecutor(submitters) as pool, stack.client() as client:
            posts = [pool.submit(post) for _ in range(submitters)]
            go.wait()
            started = time.monotonic()
            if delay is None:
                results = [p.result(timeout=120) for p in posts]
                took = time.monotonic() - started
                deleted = client.delete(f"/v1/files/{train_id}")
            else:
                time.sleep(delay)
                deleted = client.delete(f"/v1/files/{train_id}")
                results = [p.result(timeout=120) for p in posts]
                took = time.monotonic() - started
        return results, deleted, train_id, took

    def judge(http: httpx.Client, posts: list[httpx.Response], deleted: httpx.Response, train_id: str) -> None:
        texts = [r.text for r in [*posts, deleted]]
        assert all(r.status_code < 500 for r in [*posts, deleted]), texts
        accepted = [p for p in posts if p.status_code == 201]
        if deleted.status_code == 204:
            assert not accepted, ("the DELETE and a job were both accepted", texts)
            assert [p.status_code for p in posts] == [422] * submitters, texts
            assert http.get(f"/v1/files/{train_id}").status_code == 404
            for p in posts:
                error = p.json()["error"]
                when = "during submission" if "while the job was being submitted" in error["message"] else "before"
                outcomes[f"DELETE 204 ({when}), submission 422 {error['code']}"] += 1
        else:
            assert deleted.status_code == 409 and deleted.json()["error"]["code"] == "file_in_use", texts
            assert accepted and all(p.status_code in (201, 422) for p in posts), texts
            assert http.get(f"/v1/files/{train_id}").status_code == 200
            outcomes["DELETE 409 file_in_use, submission 201"] += len(accepted)

    with stack.client() as http:
        posts, deleted, train_id, took = race(http, None)  # the DELETE after: how long submissions take here
        judge(http, posts, deleted, train_id)
        delays = [0.0, 0.5 * took, 0.9 * took, 1.05 * took]  # before, during (probe, lock), after
        for delay in delays:
            posts, deleted, train_id, _ = race(http, delay)
            judge(http, posts, deleted, train_id)
    # The database agrees: every job names files that exist.
    files = {r.id for r in stack.query("SELECT id FROM files")}
    for job in stack.query("SELECT id, spec FROM jobs"):
        spec = job.spec if isinstance(job.spec, dict) else json.loads(job.spec)
        assert spec["dataset"]["train"] in files, (job.id, spec["dataset"])
    FAULTS["DELETE/submit races"] += len(delays) + 1
    assert "probe failed" not in stack.api.output(max_chars=10**8), stack.api.output()
    OBSERVED.append(f"{len(delays) + 1} DELETE/submit races ({submitters} submitters, {took:.1f}s): {dict(outcomes)}")
    assert outcomes["DELETE 409 file_in_use, submission 201"] and len(outcomes) >= 2, outcomes


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print("\nfaults injected and observed:", dict(FAULTS), *OBSERVED, sep="\n  ")
