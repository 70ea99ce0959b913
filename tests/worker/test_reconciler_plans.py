"""The reconciler's queries read only the live jobs, even as generic plans.

A prepared statement's generic plan is made without the parameter values. With the statuses bound, it could
not know that it reads the few live jobs, and walked the primary key of every job ever run (0.7-0.9 s at 1M
jobs, bench/scale_explain.py --only reconciler). The statements are caught as the reconciler sends them,
prepared, and explained with plan_cache_mode = force_generic_plan. Sequential scans are switched off: on a
table this small one would win anyway, and the question is whether the plan can use the index at all.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import psycopg.sql
from sqlalchemy import event, text
from sqlalchemy.orm import Session, sessionmaker

from app.models import utcnow
from tests.worker.conftest import add_job, fake_spec
from worker.reconciler import reconcile_once

_PARAM = re.compile(r"%\((\w+)\)s")


def _caught_selects(sessions: sessionmaker[Session], settings: Any) -> list[tuple[str, dict[str, Any]]]:
    engine = sessions.kw["bind"]
    caught: list[tuple[str, dict[str, Any]]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM jobs" in statement:
            caught.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        reconcile_once(settings=settings, sessions=sessions, send=lambda job_id: None)
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    return caught


def _generic_plan(sessions: sessionmaker[Session], statement: str, parameters: dict[str, Any]) -> str:
    order: dict[str, int] = {}
    prepared = _PARAM.sub(lambda m: f"${order.setdefault(m.group(1), len(order) + 1)}", statement)
    with sessions() as session:
        session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        session.execute(text("SET LOCAL enable_seqscan = off"))
        connection = session.connection()
        connection.exec_driver_sql(f"PREPARE reconciler_query AS {prepared}")
        driver = connection.connection.dbapi_connection
        arguments = ", ".join(psycopg.sql.Literal(parameters[name]).as_string(driver) for name in order)
        rows = connection.exec_driver_sql(f"EXPLAIN EXECUTE reconciler_query({arguments})")
        plan = "\n".join(row[0] for row in rows)
        connection.exec_driver_sql("DEALLOCATE reconciler_query")  # it outlives the transaction
        session.rollback()
    return plan


def test_the_reconcilers_generic_plans_read_only_live_jobs(sessions: sessionmaker[Session], settings: Any) -> None:
    with sessions.begin() as session:  # a history of finished jobs, a few live ones
        session.execute(
            text(
                "INSERT INTO jobs (id, tenant_id, status, spec, created_at, updated_at, progress, metrics, attempt, "
                "cancel_requested) SELECT 'job_old' || i, 'local', 'succeeded', '{}', now(), now(), '{}', '{}', 1, "
                "false FROM generate_series(1, 2000) AS i"
            )
        )
    add_job(sessions, fake_spec("succeed"), created_at=utcnow() - timedelta(minutes=5))
    with sessions() as session:
        session.connection().exec_driver_sql("ANALYZE jobs")
        session.commit()

    selects = _caught_selects(sessions, settings)
    assert len(selects) == 2  # exhausted_jobs, jobs_needing_dispatch
    for statement, parameters in selects:
        plan = _generic_plan(sessions, statement, parameters)
        # The live jobs' own index, or an index condition on statuses the plan knows (constants, not $n);
        # never a walk of pk_jobs.
        knows = "ix_jobs_live_id" in plan or re.search(r"Index Cond: .*status\)::text = (ANY \()?'", plan)
        assert knows and "pk_jobs" not in plan, f"{statement}\n{plan}"
