"""HTTP for /v1/jobs: parse, call the service, shape the response. No rules here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi import status as http
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import Connection

from app.db import after_commit, end_request_transaction, in_worker_thread
from app.dependencies import (
    EventHubDep,
    JobCacheDep,
    ProbeLimiterDep,
    QueueDep,
    ReadsDep,
    SessionDep,
    SettingsDep,
    TenantDep,
)
from app.errors import NotFound
from app.errors_doc import error_responses
from app.jobs import repository, service, validation
from app.jobs.read_cache import Answer
from app.jobs.schemas import EventList, EventRead, JobCreate, JobList, JobRead, MetricList, MetricRead
from app.models import JobStatus
from app.pagination import DEFAULT_LIMIT, AfterQuery, IdCursor, LimitQuery, event_cursor

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry-safe submission: the same key and body return the first job (200) instead of a new one.",
    ),
]
SeriesLimit = Annotated[int, Query(ge=1, le=10_000, description="Page size.")]
# One event of the stream as an EventSource client reads it: before Open API 3.2 (`itemSchema`), the schema of
# an event-stream media type describes each event, not the whole text.
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["message", "end"], "description": "message (the default), or end."},
        "id": {"type": "string", "description": "The event's id: resume after it with Last-Event-ID."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": 'message: the event, as in EventList.data; end: {"status": the job\'s final status}.',
        },
        "retry": {"type": "integer"},
    },
}


@router.post(
    "",
    status_code=http.HTTP_201_CREATED,
    response_model=JobRead,
    responses={
        200: {"model": JobRead, "description": "Replay: this Idempotency-Key and body already created the job"},
        **error_responses(409, 413, 422, 429),
    },
    summary="Submit a distillation job",
)
async def create_job(
    spec: JobCreate,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    queue: QueueDep,
    limiter: ProbeLimiterDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    # One transaction when the spec's check passed before. Else three steps, so that no connection (and no
    # thread of the shared pool) waits on a model being run: read what the check needs, end that
    # transaction, run the check in a probe slot, then write the job.
    @in_worker_thread
    def submit() -> tuple[JobRead, bool] | validation.PlannedCheck:
        outcome = service.submit_job(
            session, tenant=tenant, settings=settings, queue=queue, spec=spec, idempotency_key=idempotency_key
        )
        if isinstance(outcome, validation.PlannedCheck):
            session.rollback()  # it only read: its connection goes back to the pool before the check
            return outcome
        row, created = outcome
        # Commit and send here, not in a second thread (app/db.py), and before the answer is built: until the
        # commit, this transaction holds the tenant's count of live jobs, which its other submissions wait on.
        end_request_transaction(session)
        return JobRead.model_validate(row), created  # loaded attributes only (expire_on_commit=False)

    outcome = await submit()
    if isinstance(outcome, tuple):
        job, created = outcome
    else:
        checked = outcome
        await validation.check_once(checked, spec=spec, settings=settings, limiter=limiter)

        @in_worker_thread
        def create() -> tuple[JobRead, bool]:
            row, created = service.create_job(
                session,
                tenant=tenant,
                settings=settings,
                queue=queue,
                spec=spec,
                idempotency_key=idempotency_key,
                checked=checked,
            )
            end_request_transaction(session)
            return JobRead.model_validate(row), created

        job, created = await create()
    # The answer as bytes, as get_job does: FastAPI would validate the JobRead once more against the
    # response_model (which documents it) before serialising it (docs/BENCHMARKS.md, bursts).
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        job.model_dump_json(),
        status_code=http.HTTP_201_CREATED if created else http.HTTP_200_OK,
        media_type="application/json",
        headers=headers,
    )


@router.get("", response_model=JobList, responses=error_responses(422), summary="List jobs, newest first")
@in_worker_thread
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    after: AfterQuery = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
) -> JobList:
    jobs, has_more = service.list_jobs(session, tenant=tenant, limit=limit, after=after, status=status)
    return JobList(data=[JobRead.model_validate(job) for job in jobs], has_more=has_more)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    responses={304: {"description": "If-None-Match matched the job's ETag: nothing changed"}, **error_responses(404)},
    summary="Get a job (with an ETag; If-None-Match answers 304 while nothing changed)",
)
async def get_job(
    job_id: str,
    reads: ReadsDep,
    cache: JobCacheDep,
    tenant: TenantDep,
    if_none_match: Annotated[str | None, Header(description="An ETag from an earlier answer.")] = None,
) -> Response:
    # The API's hottest path (clients poll it), so it is lean: the answer this process served last, until
    # Postgres says the job changed (app/jobs/read_cache.py); else one autocommit read of the job and its
    # artifacts in one worker thread, no request session, and the body serialised by JobRead from that row
    # (a Response is not validated again by FastAPI; response_model documents it). docs/BENCHMARKS.md.
    answer = cache.get(job_id, tenant)
    if answer is None:

        def read(connection: Connection, generation: int) -> Answer:
            job = repository.read(connection, tenant=tenant, job_id=job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            fresh = Answer(
                tenant,
                service.etag_of(job_id, job["updated_at"]),
                JobRead.model_validate(job).model_dump_json().encode(),
            )
            cache.store(job_id, fresh, generation=generation)  # unless a change was heard since `generation`
            return fresh

        answer = await cache.read_once(
            job_id, tenant, lambda generation: run_in_threadpool(reads.run, lambda c: read(c, generation))
        )
    if if_none_match is not None and service.etag_matches(if_none_match, answer.etag):
        return Response(status_code=http.HTTP_304_NOT_MODIFIED, headers={"ETag": answer.etag})
    return Response(answer.body, media_type="application/json", headers={"ETag": answer.etag})


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses=error_responses(404, 409),
    summary="Cancel a job (queued: at once; running: the worker stops it and sets 'cancelled')",
)
@in_worker_thread
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep, cache: JobCacheDep) -> JobRead:
    after_commit(session, lambda: cache.forget(job_id))  # the client sees its cancel at once
    return JobRead.model_validate(service.cancel_job(session, tenant=tenant, job_id=job_id))


@router.get(
    "/{job_id}/events",
    response_model=EventList,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
            "description": "A page of events; with `stream=true` (or `Accept: text/event-stream`) Server-Sent "
            "Events: `id:` the event id, `data:` the event as JSON, and `event: end` once the job has ended.",
        },
        **error_responses(404, 422),
    },
    summary="The job's event log, or a live stream of it",
)
async def list_events(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    hub: EventHubDep,
    after: IdCursor = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    stream: Annotated[bool, Query(description="Stream the events as Server-Sent Events until the job ends.")] = False,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    last_event_id: Annotated[
        str | None, Header(description="Resume a stream after this event id (sent by EventSource on reconnect).")
    ] = None,
) -> EventList | StreamingResponse:
    if stream or "text/event-stream" in (accept or ""):
        await run_in_threadpool(lambda: service.get_job(session, tenant=tenant, job_id=job_id))  # 404 for others
        start = event_cursor(last_event_id) if last_event_id is not None else (after or 0)
        return StreamingResponse(
            hub.stream(job_id, after=start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def page() -> EventList:
        events, has_more = service.list_events(session, tenant=tenant, job_id=job_id, after=after, limit=limit)
        return EventList(data=[EventRead.model_validate(e) for e in events], has_more=has_more)

    return await run_in_threadpool(page)


@router.get(
    "/{job_id}/metrics",
    response_model=MetricList,
    responses=error_responses(404, 422),
    summary="The job's training curves: one row per (name, step)",
)
@in_worker_thread
def list_metrics(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    name: Annotated[str | None, Query(max_length=128, description="Only this series, e.g. val/top1.")] = None,
    after: IdCursor = None,
    limit: SeriesLimit = 1000,
) -> MetricList:
    metrics, has_more = service.list_metrics(session, tenant=tenant, job_id=job_id, name=name, after=after, limit=limit)
    return MetricList(data=[MetricRead.model_validate(m) for m in metrics], has_more=has_more)
