"""Operations: liveness, readiness (database + broker) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.dependencies import SettingsDep
from app.errors_doc import error_responses
from app.queue import broker_problem

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    # async: a liveness probe must not queue behind database work for a worker thread.
    return {"status": "ok"}


@router.get(
    "/readyz", responses=error_responses(503, validation=False), summary="The database and the broker are reachable"
)
async def readyz(request: Request, settings: SettingsDep) -> Any:
    problems = {
        "database": await run_in_threadpool(_database_problem, request),
        "broker": await run_in_threadpool(broker_problem, settings),
    }
    down = {name: why for name, why in problems.items() if why is not None}
    if down:
        message = "; ".join(f"{name} is down ({why})" for name, why in down.items())
        return JSONResponse(
            {"error": {"code": "not_ready", "message": message, "param": ", ".join(down)}}, status_code=503
        )
    return {"status": "ready", "checks": {name: "ok" for name in problems}}


def _database_problem(request: Request) -> str | None:
    try:
        with request.app.state.sessionmaker() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    # The collector queries the database: off the event loop.
    body = await run_in_threadpool(generate_latest, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
