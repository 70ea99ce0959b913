"""Rules for jobs: submission (validation, idempotency, enqueue after commit), reads, cancellation.

Never commits: the request's session dependency does, and the Celery message is an after-commit callback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.auth.limits import TenantLimits
from app.auth.quotas import check_job_slot, refuse_when_full
from app.checks import repository as verdicts_repository
from app.db import after_commit
from app.errors import AppError, Conflict, InvalidRequest, NotFound
from app.jobs import repository
from app.jobs.schemas import JobCreate
from app.jobs.validation import PlannedCheck, lock_files, plan_job, validate_job
from app.models import FINISHED_STATUSES, Job, JobEvent, JobMetric, new_id, utcnow
from app.pagination import split_page
from app.queue import JobQueue
from app.settings import Settings
from app.webhooks.outbox import record_job_event
from distill.errors import UserError

IDEMPOTENCY_PARAM = "Idempotency-Key"


def stored_spec(spec: JobCreate) -> dict[str, Any]:
    """The body as the job stores it: normalised, every default written out."""
    return spec.model_dump(mode="json", by_alias=True)


def request_hash(stored: dict[str, Any]) -> str:
    """Hash of the stored (normalised) body: the same job written with or without its defaults hashes the same."""
    canonical = json.dumps(stored, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replayed(session: Session, *, tenant: str, key: str | None, digest: str) -> Job | None:
    """The job an earlier request with this Idempotency-Key made (its replay; 409 if that body differed), if any."""
    if key is None:
        return None
    existing = repository.get_by_idempotency_key(session, tenant=tenant, key=key)
    return None if existing is None else _replay(existing, digest)


def submit_job(
    session: Session,
    *,
    tenant: str,
    settings: Settings,
    queue: JobQueue,
    spec: JobCreate,
    idempotency_key: str | None = None,
) -> tuple[Job, bool] | PlannedCheck:
    """The endpoint's first step: (job, created) at once, in this one transaction, when no check must run
    first (the same check passed before, see app/checks/verdicts.py); else the plan of that check.

    The caller must end this read-only transaction before the check runs, so that no connection waits on
    a model (DESIGN §2), then call `create_job(checked=plan)`.

    An Idempotency-Key already used answers its first job (200, or 409 for another body) whatever else the
    request would meet. Where the spec is fine and its check known to pass (nearly every submission), the
    job's INSERT finds the key taken, and no lookup precedes it; else the key is looked up before the
    request is refused or a probe is spent on it."""
    check_metadata(spec.metadata, settings)
    stored = stored_spec(spec)
    digest = request_hash(stored)
    try:
        plan = plan_job(session, tenant=tenant, settings=settings, spec=spec, lock=True)  # files: FOR SHARE
    except (AppError, UserError) as refused:
        if getattr(refused, "status_code", 422) >= 500:
            raise
        replayed = _replayed(session, tenant=tenant, key=idempotency_key, digest=digest)
        if replayed is None:
            raise
        return replayed, False  # e.g. a retry after the job's file was deleted: the job stands
    if not plan.passed:
        replayed = _replayed(session, tenant=tenant, key=idempotency_key, digest=digest)
        if replayed is not None:
            return replayed, False
        check_job_slot(session, tenant=tenant, settings=settings)  # before a probe is spent on it
        return plan
    return _write_job(
        session,
        tenant=tenant,
        settings=settings,
        queue=queue,
        stored=stored,
        key=idempotency_key,
        digest=digest,
        plan=plan,
        files_locked=True,
    )


def create_job(
    session: Session,
    *,
    tenant: str,
    settings: Settings,
    queue: JobQueue,
    spec: JobCreate,
    idempotency_key: str | None = None,
    checked: PlannedCheck | None = None,
) -> tuple[Job, bool]:
    """(job, created). A repeated Idempotency-Key with the same body returns the first job (created=False).

    `checked`: the spec was checked already, outside this transaction (`submit_job`, then
    validation.check_once: what the endpoint does, so that no connection is held while the probe
    runs); here its files are only locked. Without it every check runs now."""
    check_metadata(spec.metadata, settings)
    stored = stored_spec(spec)
    digest = request_hash(stored)
    replayed = _replayed(session, tenant=tenant, key=idempotency_key, digest=digest)
    if replayed is not None:
        return replayed, False
    if checked is None:
        check_job_slot(session, tenant=tenant, settings=settings)  # before a probe is spent on it
        checked = validate_job(session, tenant=tenant, settings=settings, spec=spec)
    return _write_job(
        session,
        tenant=tenant,
        settings=settings,
        queue=queue,
        stored=stored,
        key=idempotency_key,
        digest=digest,
        plan=checked,
        files_locked=False,
    )


def _write_job(
    session: Session,
    *,
    tenant: str,
    settings: Settings,
    queue: JobQueue,
    stored: dict[str, Any],
    key: str | None,
    digest: str,
    plan: PlannedCheck,
    files_locked: bool,
) -> tuple[Job, bool]:
    """Write the checked job: its files locked, a probe's fresh pass, the row with its `queued` event, then a
    job slot taken under the tenant's lock, and the message sent once all of it is committed.

    The job's INSERT takes its tenant's counter of live jobs, whose row lock serialises the tenant's
    submissions until they commit; the write and the count are one round trip on Postgres
    (jobs.repository.write_new_job), so that lock covers the count and the commit. A 429 rolls the job back
    with the rest of the transaction."""
    if not files_locked:  # planned in another transaction (before a probe)
        lock_files(session, tenant=tenant, plan=plan)  # a DELETE of one of them now waits for our commit
    now = utcnow()
    if plan.inputs and not plan.passed:  # the probe passed just now: other processes need not run it again
        verdicts_repository.record_pass(session, tenant=tenant, key=plan.verdict, now=now)
    job = Job(
        id=new_id("job_"),
        tenant_id=tenant,
        status="queued",
        spec=stored,
        created_at=now,
        updated_at=now,
        progress={},
        metrics={},
        attempt=0,
        cancel_requested=False,
        idempotency_key=key,
        request_hash=digest,
        dispatched_at=now,  # the send below; the queue clears it if the send fails
    )
    written = repository.write_new_job(
        session,
        job,
        default_time_budget=settings.job_time_budget_seconds,
        event_type="queued",
        event_message="job accepted and queued",
    )
    if not written.inserted:
        # Another request with the same key committed before our insert.
        replayed = _replayed(session, tenant=tenant, key=key, digest=digest)
        if replayed is None:
            raise RuntimeError(f"job with Idempotency-Key {key!r} conflicted on insert but cannot be read")
        return replayed, False
    limits = TenantLimits.of(written.tenant, settings)
    refuse_when_full(limits, live_jobs=written.live_jobs - 1, settings=settings)  # the count saw this job
    # The worker must find a committed row when the message arrives, hence after commit. dispatched_at is
    # written with the row, as the reconciler marks a job before it sends: if the send fails, the queue sets
    # it back to NULL and the reconciler re-sends the job within a round; if this process dies before it
    # sends, the reconciler finds no message in the broker once dispatched_at is redispatch_seconds old.
    job_id = job.id
    after_commit(session, lambda: queue.send_run_job(job_id))
    return job, True


def check_metadata(metadata: dict[str, str], settings: Settings) -> None:
    """Labels are stored with the job and echoed in every listing: their count and sizes are capped."""
    if len(metadata) > settings.max_metadata_keys:
        raise InvalidRequest(
            f"metadata has {len(metadata)} keys; at most {settings.max_metadata_keys} are accepted", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > settings.max_metadata_key_chars:
            raise InvalidRequest(
                f"metadata key {key[:40]!r}... is longer than {settings.max_metadata_key_chars} characters",
                param="metadata",
            )
        if len(value) > settings.max_metadata_value_chars:
            raise InvalidRequest(
                f"metadata[{key[:40]!r}] is longer than {settings.max_metadata_value_chars} characters",
                param="metadata",
            )
    size = len(json.dumps(metadata).encode())
    if size > settings.max_metadata_bytes:
        raise InvalidRequest(
            f"metadata takes {size:,} bytes as JSON; at most {settings.max_metadata_bytes:,} are accepted",
            param="metadata",
        )


def _replay(existing: Job, digest: str) -> Job:
    if existing.request_hash != digest:
        raise Conflict(
            f"Idempotency-Key was already used for job {existing.id} with a different body; "
            "use a new key for a different job",
            code="idempotency_conflict",
            param=IDEMPOTENCY_PARAM,
        )
    return existing


def get_job(session: Session, *, tenant: str, job_id: str) -> Job:
    job = repository.get(session, tenant=tenant, job_id=job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def etag_of(job_id: str, updated_at: object) -> str:
    """The job's ETag: every change to a job (status, progress, metrics, artifacts) moves its updated_at."""
    return '"' + hashlib.sha256(f"{job_id}|{updated_at}".encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak or strong, one of a list) or is `*`."""
    if if_none_match == etag:  # what a poller sends back: the ETag it was given
        return True
    return if_none_match.strip() == "*" or etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


def list_jobs(
    session: Session, *, tenant: str, limit: int, after: str | None, status: str | None
) -> tuple[list[Job], bool]:
    return split_page(repository.list_page(session, tenant=tenant, limit=limit, after=after, status=status), limit)


def cancel_job(session: Session, *, tenant: str, job_id: str) -> Job:
    """queued → cancelled at once (the worker only claims 'queued' jobs, so it never starts);
    running → cancelling (the supervisor sees cancel_requested, stops the child, and sets cancelled);
    cancelling → unchanged; finished → 409."""
    job = get_job(session, tenant=tenant, job_id=job_id)
    now = utcnow()
    if job.status == "queued" and repository.transition(
        session, job, from_status="queued", status="cancelled", cancel_requested=True, finished_at=now, updated_at=now
    ):
        repository.add_event(session, job_id=job.id, type="cancelled", message="cancelled before it started")
        record_job_event(session, job_id=job.id, tenant_id=job.tenant_id, status="cancelled", now=now)
        return job
    # Not queued any more (or a worker claimed it a moment ago): ask the running job to stop.
    if job.status == "running" and repository.transition(
        session, job, from_status="running", status="cancelling", cancel_requested=True, updated_at=now
    ):
        repository.add_event(session, job_id=job.id, type="cancel_requested", message="cancel requested")
        return job
    if job.status in FINISHED_STATUSES:
        raise Conflict(
            f"job {job.id} is already {job.status}; only a queued or running job can be cancelled",
            code="job_not_cancellable",
        )
    return job  # cancelling already: cancelling twice is not an error


def list_events(
    session: Session, *, tenant: str, job_id: str, after: int | None, limit: int
) -> tuple[list[JobEvent], bool]:
    get_job(session, tenant=tenant, job_id=job_id)
    return split_page(repository.list_events(session, job_id=job_id, after=after, limit=limit), limit)


def list_metrics(
    session: Session, *, tenant: str, job_id: str, name: str | None, after: int | None, limit: int
) -> tuple[list[JobMetric], bool]:
    get_job(session, tenant=tenant, job_id=job_id)
    rows: Sequence[JobMetric] = repository.list_metrics(session, job_id=job_id, name=name, after=after, limit=limit)
    return split_page(rows, limit)
