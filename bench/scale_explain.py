"""Scale on paper: how the job reads, the submission and the worker's statements grow with 10k, 100k, 1M jobs.

A scratch Postgres database (`distillery_scale`, migrated to head) is filled with SQL `generate_series`:
jobs spread over 100 tenants plus one big tenant holding 60 % of them (and one dormant tenant whose 50 jobs
are all old), 98 % finished, 2 % failed, ~1 % cancelled, a third with an Idempotency-Key, 5-10 events each,
two artifact rows per succeeded job; the newest 200 jobs are the live ones (105 queued, 95 running, a few of
them what the reconciler looks for). The same tables grow 10k -> 100k -> 1M, with ANALYZE after each load.

At each size the real code runs against the data: the repositories' functions, the submission service, the
worker's claim / flush / finish and one reconciler round, each in a savepoint that is rolled back. Every
statement they send is caught on its way to the driver (SQLAlchemy's `before_cursor_execute`) and, before it
runs, explained with EXPLAIN (ANALYZE, BUFFERS) with the very parameters it carries, in a savepoint of its
own (the second of two runs is kept: a warm cache, as on a busy server). So the SQL is byte for byte what the
service sends, not a hand-written copy. Each statement is also run as a prepared statement: psycopg prepares
a statement on its 5th run on a connection, and after five runs of it Postgres may switch to a *generic*
plan, made without the parameter values, for good. Recorded: the plan of its 6th run (plan_cache_mode auto,
what a long-lived API or worker connection ends up running) and the generic plan (forced).

Every size is measured twice: with the schema at head, and with the migrations after `--before` undone
inside a transaction that is rolled back (by default 0006 and later: the "before" of the indexes they add).
The statements are caught and explained by bench/explain.py.

    python -m bench.scale_explain [--sizes 10000 100000 1000000] [--only reconciler] [--before REVISION]

Needs Postgres on its standard local port. Writes bench/results/scale_explain.json, prints markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from bench.explain import Explainer

DATABASE = "distillery_scale"
BEFORE_REVISION = "0005_webhooks"  # the schema without 0006_scale_indexes (and later), by default
GROUPS = ("api", "submit", "worker", "reconciler")
ACTIVE = 200  # the newest jobs are the live ones
BIG = "big"
SMALL = "t007"
WORKER_ID = "bench-worker"

# One job per second of 2025 onwards, so ids (prefix + 12 hex digits of ms, as app.models.base.new_id) sort
# by creation like real ones, and every job the service creates during the run is newer.
_JOB = "'job_' || lpad(to_hex(1735689600000 + i * 1000), 12, '0') || substr(md5(i::text), 1, 12)"
_TENANT = (
    "CASE WHEN i <= 10000 AND i % 200 = 0 THEN 'dormant' "
    f"WHEN (hashtext('t' || i) & 1023) < 614 THEN '{BIG}' ELSE 't' || lpad((i % 100)::text, 3, '0') END"
)
# A typical submitted body. json.dumps writes ": " (a ":0" would read as a bind parameter to text()).
_SPEC = json.dumps(
    {
        "mode": "offline",
        "teacher": {
            "file_id": "file_0193a1b2c3d4e5f6a7b8c9d0",
            "format": "safetensors",
            "architecture": {"name": "mlp", "kwargs": {"hidden": [256, 256]}},
            "init": "checkpoint",
        },
        "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [32]}}, "init": "random"},
        "dataset": {"train": "builtin:digits", "val_fraction": 0.1},
        "knowledge": {"terms": [{"type": "response", "temperature": 4.0, "weight": 1.0}], "lambda": 0.5},
        "training": {"epochs": 10, "batch_size": 64, "lr": 0.001, "device": "cpu"},
        "metadata": {"team": "vision"},
    }
)
LOAD_JOBS = f"""
INSERT INTO jobs (id, tenant_id, status, spec, created_at, updated_at, started_at, finished_at, progress, metrics,
                  attempt, cancel_requested, dispatched_at, idempotency_key, request_hash)
SELECT {_JOB}, {_TENANT},
       CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'cancelled' ELSE 'succeeded' END,
       '{_SPEC}'::json, t, t + interval '90 s', t + interval '2 s', t + interval '90 s',
       '{{"epoch": 10, "epochs": 10, "fraction": 1.0}}'::json, '{{"val/top1": 0.93, "train/loss": 0.21}}'::json,
       1, false, t + interval '10 ms', CASE WHEN i % 3 = 0 THEN 'idem-' || i END, md5(i::text) || md5((-i)::text)
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i,
     LATERAL (SELECT timestamptz '2025-01-01' + i * interval '1 s' AS t) AS ts
"""
LOAD_EVENTS = f"""
INSERT INTO job_events (job_id, created_at, level, type, message, data)
SELECT {_JOB}, timestamptz '2025-01-01' + i * interval '1 s' + e * interval '5 s', 'info',
       CASE WHEN e = 1 THEN 'queued' WHEN e = 2 THEN 'running' WHEN e = 5 + i % 6 THEN 'succeeded' ELSE 'epoch' END,
       CASE WHEN e = 1 THEN 'job accepted and queued' ELSE 'epoch ' || (e - 2) || ' started' END,
       json_build_object('epoch', e - 2)
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i, generate_series(1, 5 + i % 6) AS e
"""
LOAD_ARTIFACTS = f"""
INSERT INTO artifacts (id, job_id, tenant_id, name, bytes, sha256, format, storage_path, created_at)
SELECT 'art_' || substr(md5(i || name), 1, 24), {_JOB}, {_TENANT}, name, 40000, md5(name || i) || md5(i || name),
       fmt, 'jobs/' || {_JOB} || '/' || name, timestamptz '2025-01-01' + i * interval '1 s' + interval '90 s'
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i,
     (VALUES ('student.safetensors', 'safetensors'), ('report.json', 'json')) AS a(name, fmt)
WHERE i % 50 <> 0 AND i % 97 <> 0
"""
# The previous size's live jobs have finished; the newest ACTIVE jobs are live now (n = 1 is the newest), their
# times relative to the wall clock (clock_timestamp: `now()` is when the transaction began).
FINISH_LIVE = """
UPDATE jobs SET status = 'succeeded', finished_at = now(), lease_expires_at = NULL, worker_id = NULL,
       dispatched_at = coalesce(dispatched_at, now())
WHERE status IN ('queued', 'running', 'cancelling')
"""
MAKE_LIVE = """
WITH newest AS (SELECT id, row_number() OVER (ORDER BY id DESC) AS n FROM jobs ORDER BY id DESC LIMIT :active)
UPDATE jobs AS j SET
  status = CASE WHEN n <= 105 THEN 'queued' ELSE 'running' END,
  created_at = clock_timestamp() - n * interval '1 s', updated_at = clock_timestamp() - interval '1 s',
  finished_at = NULL,
  started_at = CASE WHEN n > 105 THEN clock_timestamp() - n * interval '1 s' END,
  progress = '{}', metrics = '{}',
  attempt = CASE WHEN n <= 105 THEN 0 WHEN n > 195 THEN 3 ELSE 1 END,
  -- 1-100 queued, sent a second ago; 101-105 queued, never sent (the broker was down): the reconciler sends
  dispatched_at = CASE WHEN n <= 100 THEN clock_timestamp() - interval '1 s'
                       WHEN n > 105 THEN clock_timestamp() - n * interval '1 s' END,
  -- 106-190 running under a live lease; 191-195 orphaned (lease expired); 196-200 orphaned, out of attempts
  lease_expires_at = CASE WHEN n BETWEEN 106 AND 190 THEN clock_timestamp() + interval '60 s'
                          WHEN n > 190 THEN clock_timestamp() - interval '120 s' END,
  worker_id = CASE WHEN n > 105 THEN :worker END
FROM newest WHERE j.id = newest.id
"""
LIVE_METRICS = """
INSERT INTO job_metrics (job_id, name, step, epoch, value, created_at)
SELECT j.id, name, epoch * 100, epoch, random(), now()
FROM jobs AS j, generate_series(1, 10) AS epoch, unnest(ARRAY['train/loss', 'train/lr', 'val/top1', 'val/loss']) AS name
WHERE j.status = 'running' AND NOT EXISTS (SELECT 1 FROM job_metrics AS m WHERE m.job_id = j.id)
"""


def load(engine: Engine, lo: int, hi: int) -> float:
    """Add jobs lo..hi (with their events and artifacts), move the live set to the newest, ANALYZE."""
    started = time.perf_counter()
    with engine.begin() as connection:
        # The rows are consistent by construction: skip the per-row foreign-key triggers of a bulk load.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text("SET LOCAL synchronous_commit = off"))
        for statement in (LOAD_JOBS, LOAD_EVENTS, LOAD_ARTIFACTS):
            connection.execute(text(statement), {"lo": lo, "hi": hi})
        connection.execute(text(FINISH_LIVE))
        connection.execute(text(MAKE_LIVE), {"active": ACTIVE, "worker": WORKER_ID})
        connection.execute(
            text("DELETE FROM artifacts WHERE job_id IN (SELECT id FROM jobs WHERE finished_at IS NULL)")
        )
        connection.execute(text(LIVE_METRICS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


def seed_fixed_rows(engine: Engine) -> None:
    """Tenants (the big one may run many jobs at once), a teacher file for two tenants, one webhook."""
    from app.models import File, Tenant, WebhookEndpoint

    with Session(engine) as session, session.begin():
        tenants = [BIG, "dormant", *(f"t{n:03d}" for n in range(100))]
        session.add_all(Tenant(id=t, max_concurrent_jobs=100_000 if t == BIG else None) for t in tenants)
        for tenant in (BIG, SMALL):
            session.add(
                File(
                    id=f"file_{tenant}_teacher",
                    tenant_id=tenant,
                    purpose="teacher",
                    filename="teacher.safetensors",
                    bytes=10_000,
                    sha256="0" * 64,
                    format="safetensors",
                    meta={},
                    storage_path=f"{tenant}/teacher.safetensors",
                )
            )
        events = ["job.running", "job.succeeded", "job.failed", "job.cancelled"]
        session.add(WebhookEndpoint(tenant_id=BIG, url="https://example.com/hook", events=events, secret="whsec_x"))


# --- what the service does, run against the data ----------------------------------------------------------


@dataclass
class Context:
    """Ids picked from the data before the cases run (not explained)."""

    settings: Any
    worker_settings: Any
    queue: Any
    big_job: str  # the big tenant's newest finished job (it has artifacts)
    small_job: str
    big_middle: str  # the id halfway down the big tenant's list: a cursor deep in its pages
    small_middle: str
    idempotency_key: str  # a key the big tenant used before
    event_cursor: int  # after the big job's first two events
    queued_job: str
    running_job: str  # running under a live lease held by WORKER_ID
    watched: dict[str, int]  # running jobs -> the event id their SSE watchers have sent


def pick_context(connection: Connection, settings: Any, worker_settings: Any, queue: Any) -> Context:
    def one(sql: str, **params: Any) -> Any:
        return connection.execute(text(sql), params).scalar_one()

    def middle(tenant: str) -> str:
        return str(
            one("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY id) FROM jobs WHERE tenant_id = :t", t=tenant)
        )

    newest_finished = "SELECT id FROM jobs WHERE tenant_id = :t AND status = 'succeeded' ORDER BY id DESC LIMIT 1"
    big_job = one(newest_finished, t=BIG)
    watched = connection.execute(
        text(
            "SELECT job_id, max(id) - 1 FROM job_events WHERE job_id IN "
            "(SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at > now() ORDER BY id DESC LIMIT 50) "
            "GROUP BY job_id"
        )
    ).all()
    live = "SELECT id FROM jobs WHERE tenant_id = :t AND status = :s AND {} ORDER BY id LIMIT 1"
    return Context(
        settings=settings,
        worker_settings=worker_settings,
        queue=queue,
        big_job=big_job,
        small_job=one(newest_finished, t=SMALL),
        big_middle=middle(BIG),
        small_middle=middle(SMALL),
        idempotency_key=one(
            "SELECT idempotency_key FROM jobs WHERE tenant_id = :t AND idempotency_key IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            t=BIG,
        ),
        event_cursor=one("SELECT id FROM job_events WHERE job_id = :j ORDER BY id OFFSET 1 LIMIT 1", j=big_job),
        queued_job=one(live.format("dispatched_at IS NOT NULL"), t=BIG, s="queued"),
        running_job=one(live.format("lease_expires_at > now()"), t=BIG, s="running"),
        watched={job_id: cursor for job_id, cursor in watched},
    )


Sessions = sessionmaker[Session]
Case = tuple[str, str, Callable[[Sessions, Context], object]]


def _read(fn: Callable[[Session, Context], object]) -> Callable[[Sessions, Context], object]:
    def run(sessions: Sessions, ctx: Context) -> object:
        with sessions() as session:
            return fn(session, ctx)

    return run


def _submit(tenant: str) -> Callable[[Sessions, Context], object]:
    """POST /v1/jobs as the endpoint runs it (minus the model check itself) for a spec never checked: the
    first read (no verdict in check_verdicts), its end, the write with the verdict, commit, send. A spec
    whose check passed before sends a subset of these statements in one transaction."""
    from uuid import uuid4

    from app.checks import verdicts
    from app.jobs import service
    from app.jobs.schemas import JobCreate
    from app.jobs.validation import PlannedCheck

    def run(sessions: Sessions, ctx: Context) -> object:
        spec = JobCreate.model_validate(
            {
                "teacher": {
                    "file_id": f"file_{tenant}_teacher",
                    "architecture": {"name": "mlp", "kwargs": {"hidden": [256]}},
                },
                "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [32]}}},
                "dataset": {"train": "builtin:digits"},
            }
        )
        key = f"bench-{uuid4().hex}"
        verdicts._passed.clear()  # a process that has not seen this check pass: it asks the database
        with sessions() as session:
            args = {"tenant": tenant, "settings": ctx.settings, "queue": ctx.queue, "spec": spec}
            outcome = service.submit_job(session, **args, idempotency_key=key)
            if isinstance(outcome, PlannedCheck):
                session.rollback()  # the endpoint ends the read before the check runs
                verdicts.remember(outcome.verdict)  # the check passed (not run: the bench runs no model)
                outcome = service.create_job(session, **args, idempotency_key=key, checked=outcome)
            job, _ = outcome
            session.commit()
        ctx.queue.send_run_job(job.id)  # after the commit: the message, then dispatched_at
        return job.id

    return run


def _running(ctx: Context) -> Any:
    from worker.repository import ClaimedJob

    return ClaimedJob(
        id=ctx.running_job, tenant_id=BIG, attempt=1, worker_id=WORKER_ID, spec={}, metrics={}, cancel_requested=False
    )


_PROGRESS = {"epoch": 4, "epochs": 10, "step": 350, "steps": 1000, "fraction": 0.35, "eta_seconds": 31.0}
_METRICS = ("train/loss", "train/lr", "val/top1", "val/loss")


def _flush(kind: str) -> Callable[[Sessions, Context], object]:
    """One supervisor flush (worker/supervisor.py _sync), as it is at most every flush_interval_seconds."""
    from app.models import utcnow
    from worker.repository import EventRow, MetricRow, sync_running_job

    def run(sessions: Sessions, ctx: Context) -> object:
        now = utcnow()
        values: dict[str, Any] = {}
        if kind in ("progress", "heartbeat", "epoch"):
            values["progress"] = _PROGRESS
        if kind == "heartbeat":
            values["lease_until"] = now + timedelta(seconds=60)
        if kind == "epoch":
            values["metrics"] = dict.fromkeys(_METRICS, 0.5)
            values["events"] = [EventRow("epoch", "epoch 5 started", data={"epoch": 5})]
            values["metric_rows"] = [MetricRow(name, 400, 4, 0.5) for name in _METRICS]
        with sessions() as session:
            return sync_running_job(session, _running(ctx), now=now, **values)

    return run


def _claim(sessions: Sessions, ctx: Context) -> object:
    from app.models import utcnow
    from worker.repository import claim_job

    with sessions() as session:
        return claim_job(
            session, job_id=ctx.queued_job, worker_id="bench-worker-2", now=utcnow(), lease_seconds=60, max_attempts=3
        )


def _finish(sessions: Sessions, ctx: Context) -> object:
    from app.models import utcnow
    from worker.repository import ArtifactRow, EventRow, MetricRow, finish_job

    artifacts = [
        ArtifactRow(name, 40_000, "0" * 64, name.rsplit(".", 1)[1], f"jobs/{ctx.running_job}/{name}")
        for name in ("student.safetensors", "student.onnx", "report.json")
    ]
    with sessions() as session:
        return finish_job(
            session,
            _running(ctx),
            now=utcnow(),
            status="succeeded",
            progress={**_PROGRESS, "fraction": 1.0},
            metrics=dict.fromkeys(_METRICS, 0.9),
            artifacts=artifacts,
            events=[EventRow("succeeded", "the job succeeded")],
            metric_rows=[MetricRow(name, 1000, 10, 0.9) for name in _METRICS],
        )


def _reconcile(sessions: Sessions, ctx: Context) -> object:
    from worker.reconciler import reconcile_once

    return reconcile_once(settings=ctx.worker_settings, sessions=sessions, send=lambda job_id: None)


def cases() -> list[Case]:
    from app.artifacts import repository as artifacts
    from app.jobs import repository as jobs

    def page(tenant: str, status: str | None = None, after: str = "") -> Callable[[Session, Context], object]:
        def run(session: Session, ctx: Context) -> object:
            cursor = getattr(ctx, after) if after else None
            return jobs.list_page(session, tenant=tenant, limit=20, after=cursor, status=status)

        return run

    return [
        ("api", "GET job (big tenant)", _read(lambda s, c: jobs.get(s, tenant=BIG, job_id=c.big_job))),
        ("api", "GET job (small tenant)", _read(lambda s, c: jobs.get(s, tenant=SMALL, job_id=c.small_job))),
        ("api", "ETag read (If-None-Match)", _read(lambda s, c: jobs.updated_at(s, tenant=BIG, job_id=c.big_job))),
        ("api", "list, big tenant", _read(page(BIG))),
        ("api", "list, small tenant", _read(page(SMALL))),
        ("api", "list, dormant tenant (50 old jobs)", _read(page("dormant"))),
        ("api", "list, big tenant, status=failed", _read(page(BIG, "failed"))),
        ("api", "list, small tenant, status=failed", _read(page(SMALL, "failed"))),
        ("api", "list, big tenant, status=queued", _read(page(BIG, "queued"))),
        ("api", "list, big tenant, after= (halfway down)", _read(page(BIG, after="big_middle"))),
        ("api", "list, small tenant, after= (halfway down)", _read(page(SMALL, after="small_middle"))),
        (
            "api",
            "events of one job after a cursor",
            _read(lambda s, c: jobs.list_events(s, job_id=c.big_job, after=c.event_cursor, limit=100)),
        ),
        (
            "api",
            "SSE poll: statuses + events_after, 50 watched jobs",
            _read(
                lambda s, c: (
                    jobs.statuses(s, job_ids=list(c.watched)),
                    jobs.events_after(s, cursors=c.watched, limit=1000),
                )
            ),
        ),
        (
            "api",
            "artifact download: locate",
            _read(lambda s, c: artifacts.get(s, tenant=BIG, job_id=c.big_job, name="student.safetensors")),
        ),
        ("submit", "submit, big tenant (~120 live jobs)", _submit(BIG)),
        ("submit", "submit, small tenant", _submit(SMALL)),
        (
            "submit",
            "Idempotency-Key replay lookup",
            _read(lambda s, c: jobs.get_by_idempotency_key(s, tenant=BIG, key=c.idempotency_key)),
        ),
        ("worker", "claim (once per job)", _claim),
        ("worker", "flush: progress only", _flush("progress")),
        ("worker", "flush: progress + lease renewal (every heartbeat_seconds)", _flush("heartbeat")),
        ("worker", "flush: end of an epoch (event + 4 metric rows)", _flush("epoch")),
        ("worker", "cancel poll, nothing to write (every cancel_poll_seconds)", _flush("poll")),
        ("worker", "finish (once per job)", _finish),
        ("reconciler", "one round (every reconcile_interval_seconds)", _reconcile),
    ]


def measure(
    engine: Engine, explainer: Explainer, *, schema: str, folder: Path, only: str | None = None
) -> list[dict[str, Any]]:
    """Run every case (of group `only`) at `schema` ("head", or an earlier revision: the later migrations
    undone in the transaction) and roll back."""
    from alembic import command

    from app.migrate import alembic_config
    from app.models import Base
    from app.queue import CeleryJobQueue
    from app.settings import Settings
    from worker.settings import WorkerSettings

    paths = {"artifact_dir": folder / "artifacts", "upload_dir": folder / "files", "broker_dir": folder / "broker"}
    common = {"database_url": "postgresql+psycopg://unused", "broker_url": "memory://", "auth": "required", **paths}
    settings = Settings(**common)
    worker_settings = WorkerSettings(**common)
    results = []
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            if schema != "head":
                command.downgrade(alembic_config(connection=connection), schema)
                # Today's submission reads the verdicts of 0007: the "before" is about the indexes, not it.
                Base.metadata.tables["check_verdicts"].create(connection, checkfirst=True)
            # Leases and send times relative to the wall clock now (the load may have taken minutes).
            connection.execute(text(MAKE_LIVE), {"active": ACTIVE, "worker": WORKER_ID})
            sessions = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
            queue = CeleryJobQueue(settings, sessions)
            ctx = pick_context(connection, settings, worker_settings, queue)
            for group, label, run in cases():
                if only is not None and group != only:
                    continue
                case = connection.begin_nested()
                started = time.perf_counter()
                with explainer.catching() as caught:
                    run(sessions, ctx)
                case.rollback()
                results.append(
                    {
                        "group": group,
                        "case": label,
                        "statements": fold_repeats(caught),
                        "seconds": round(time.perf_counter() - started, 3),
                    }
                )
        finally:
            transaction.rollback()
    return results


def fold_repeats(caught: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per distinct statement of a case (the reconciler sends the same UPDATE once per job), with
    how many times it was sent and its slowest run."""
    folded: dict[str, dict[str, Any]] = {}
    for entry in caught:
        key = sql_key(entry["sql"])
        if key in folded:
            folded[key]["times"] += 1
            folded[key]["custom_ms_max"] = max(folded[key]["custom_ms_max"], entry["custom"]["ms"])
        else:
            folded[key] = {**entry, "times": 1, "custom_ms_max": entry["custom"]["ms"]}
    return list(folded.values())


def table_sizes(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT relname, n_live_tup, pg_total_relation_size(relid), pg_indexes_size(relid) "
                "FROM pg_stat_user_tables WHERE relname IN ('jobs', 'job_events', 'artifacts', 'job_metrics')"
            )
        ).all()
    return {
        name: {"rows": rows_, "total_mb": round(total / 2**20), "indexes_mb": round(ix / 2**20)}
        for name, rows_, total, ix in rows
    }


# --- the report -------------------------------------------------------------------------------------------


def _what(sql: str) -> str:
    """`SELECT jobs`, `UPDATE jobs`, `INSERT job_events`: the verb and the first table."""
    verb = sql.split(None, 1)[0].upper()
    pattern = {
        "SELECT": r"\bFROM (\w+)",
        "INSERT": r"\bINTO (\w+)",
        "UPDATE": r"^UPDATE (\w+)",
        "DELETE": r"\bFROM (\w+)",
    }
    match = re.search(pattern[verb], sql)
    return f"{verb} {match.group(1) if match else '?'}"


_EXPANDED = re.compile(r"%\((\w+?)_\d+\)s(?:, %\(\1_\d+\)s)*")


def sql_key(sql: str) -> str:
    """The statement with its expanded IN lists folded (`IN (%(id_1_1)s, ...)` has as many as the values)."""
    return _EXPANDED.sub(lambda m: f"%({m.group(1)}_*)s", sql)


def rows_of(size: dict[str, Any], schema: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(case, SQL id) -> the statement's record, for one size and schema."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for case in size["schemas"][schema]:
        for statement in case["statements"]:
            out[(case["case"], statement["sql_id"])] = statement
    return out


def _cell(plan: dict[str, Any]) -> str:
    extra = f", sorts {plan['rows_sorted']:,}" if plan["rows_sorted"] else ""
    return f"{plan['ms']:.2f} ms · {plan['rows_read']:,} read{extra}"


def _other(statement: dict[str, Any], kind: str) -> str:
    plan = statement.get(kind)
    if plan is None:
        return "–"
    return "same" if plan.get("same_plan_as_custom") else f"**{plan['shape']}**: {_cell(plan)}"


def _reads(statement: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(statement.get(kind, {}).get("rows_read") for kind in ("custom", "prepared", "generic"))


def keep_changed(before: list[dict[str, Any]], head: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements of the before-0006 pass that read a different number of rows than at head (a plan
    that merely uses the new index for the same one-row lookup is left out); the rest were the same."""
    reads = {(c["case"], sql_key(st["sql"])): _reads(st) for c in head for st in c["statements"]}
    kept = []
    for case in before:
        changed = [st for st in case["statements"] if reads.get((case["case"], sql_key(st["sql"]))) != _reads(st)]
        if changed:
            kept.append({**case, "statements": changed})
    return kept


def share_sql(sizes: list[dict[str, Any]]) -> dict[str, str]:
    """Replace each record's SQL by an id into one table of statements (they repeat across sizes)."""
    texts: dict[str, str] = {}
    for size in sizes:
        for cases_run in size["schemas"].values():
            for case in cases_run:
                for statement in case["statements"]:
                    folded = sql_key(statement.pop("sql"))
                    statement["sql_id"] = hashlib.sha1(folded.encode()).hexdigest()[:10]
                    texts[statement["sql_id"]] = folded
    return texts


def markdown(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    labels = [f"{s['jobs']:,} jobs" for s in sizes]
    head = [rows_of(s, "head") for s in sizes]
    lines = [
        "| case | statement | "
        + " | ".join(labels)
        + f" | plan at {labels[-1]} | prepared, 6th run | generic (forced) |",
        "|---|---|" + "---:|" * len(labels) + "---|---|---|",
    ]
    for key, statement in head[-1].items():
        cells = [_cell(h[key]["custom"]) if key in h else "–" for h in head]
        times = f" ×{statement['times']}" if statement["times"] > 1 else ""
        rows = f" ({statement['rows_sent']} rows)" if statement["rows_sent"] > 1 else ""
        lines.append(
            f"| {key[0]} | {_what(result['sql'][key[1]])}{times}{rows} | "
            + " | ".join(cells)
            + f" | {statement['custom']['shape']} | {_other(statement, 'prepared')} | {_other(statement, 'generic')} |"
        )
    revision = result["before_revision"]
    if not all(revision in s["schemas"] for s in sizes):
        return "\n".join(lines)
    before = [rows_of(s, revision) for s in sizes]
    title = f"Before ({revision}) → after (head), where the rows read changed: custom / 6th prepared / generic"
    lines += ["", title, ""]
    lines += ["| case | statement | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for key in head[-1]:
        if all(key not in b for b in before):
            continue
        cells = []
        for b, h in zip(before, head, strict=True):
            if key not in b or key not in h:
                cells.append("–")
                continue
            pair = [
                f"{b[key][kind]['ms']:.2f} → {h[key][kind]['ms']:.2f} ms"
                for kind in ("custom", "prepared", "generic")
                if kind in h[key]
            ]
            cells.append(" / ".join(pair))
        lines.append(f"| {key[0]} | {_what(result['sql'][key[1]])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from bench.common import write_result
    from bench.services import postgres_database, run_machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--no-before", action="store_true", help="skip the pass with the later migrations undone")
    parser.add_argument("--before", default=BEFORE_REVISION, help="the revision of the 'before' pass")
    parser.add_argument("--only", choices=GROUPS, help="run only this group of cases (the load is the same)")
    args = parser.parse_args()
    load_before = os.getloadavg()

    url = postgres_database(DATABASE)
    engine = create_engine(url, pool_size=1, max_overflow=0)
    seed_fixed_rows(engine)
    explainer = Explainer(engine)
    sizes = []
    loaded = 0
    with tempfile.TemporaryDirectory(prefix="distillery-scale-") as tmp:
        for size in sorted(args.sizes):
            seconds = load(engine, loaded + 1, size)
            loaded = size
            print(f"{size:,} jobs loaded ({seconds:.0f} s), load average {os.getloadavg()}", flush=True)
            schemas = {"head": measure(engine, explainer, schema="head", folder=Path(tmp), only=args.only)}
            if not args.no_before:
                before = measure(engine, explainer, schema=args.before, folder=Path(tmp), only=args.only)
                schemas[args.before] = keep_changed(before, schemas["head"])
            sizes.append(
                {"jobs": size, "load_seconds": round(seconds, 1), "tables": table_sizes(engine), "schemas": schemas}
            )
            print(f"  measured, load average {os.getloadavg()}", flush=True)
    engine.dispose()

    result = {
        "machine": run_machine(load_before),
        "database": f"Postgres 15, localhost, scratch database {DATABASE}, default settings (shared_buffers 128 MB)",
        "data": {
            "tenants": "big: 60 % of the jobs; t000..t099: the rest; dormant: 50 jobs, all among the first 10k",
            "statuses": "98 % succeeded, 2 % failed, ~1 % cancelled; the newest 200 live (105 queued, 95 running)",
            "events_per_job": "5-10 (7.5 on average)",
            "artifacts": "2 rows per succeeded job",
            "job_metrics": "40 rows per running job only (finished jobs' metric rows are not loaded)",
        },
        "only": args.only,
        "before_revision": args.before,
        "sizes": sizes,
        "sql": share_sql(sizes),
    }
    path = write_result("scale_explain" + (f"_{args.only}" if args.only else ""), result)
    print(f"\n(results in {path})\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
