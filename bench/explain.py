"""Explain every statement the service sends, as it sends it: bench/scale_explain.py's instrument.

Each statement is caught on its way to the driver (SQLAlchemy's `before_cursor_execute`) and, before it runs,
explained with EXPLAIN (ANALYZE, BUFFERS) with the very parameters it carries, in a savepoint of its own (the
second of two runs is kept: a warm cache). It is also run as a prepared statement: its plan on the 6th run
(plan_cache_mode auto, what a long-lived connection ends up running) and the generic plan (forced), made
without the parameter values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

_EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
_PARAM = re.compile(r"%\((\w+)\)s")


def _command(cursor: Any, sql: str) -> None:
    """A command sent with libpq directly: psycopg drops every statement it has prepared when it sees a
    ROLLBACK (TO SAVEPOINT) go through its own execute, and ours would go with them."""
    import psycopg.pq

    result = cursor.connection.pgconn.exec_(sql.encode())
    if result.status not in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
        raise RuntimeError(f"{sql[:60]}: {(result.error_message or b'').decode()}")


def _explain_twice(cursor: Any, sql: str, params: Any) -> dict[str, Any]:
    """EXPLAIN ANALYZE in a savepoint rolled back at once (writes leave nothing); the second, warm run."""
    plan: dict[str, Any] = {}
    for _ in range(2):
        _command(cursor, "SAVEPOINT bench_explain")
        try:
            cursor.execute(sql, params, prepare=False)
            plan = cursor.fetchone()[0][0]
        finally:
            _command(cursor, "ROLLBACK TO SAVEPOINT bench_explain")
            _command(cursor, "RELEASE SAVEPOINT bench_explain")
    return plan


def _prepared(cursor: Any, statement: str, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The statement as a prepared statement: its plan on the 6th run (plan_cache_mode auto: after five custom
    plans Postgres keeps a generic one if it does not look costlier), and the generic plan itself (forced)."""
    import psycopg.sql

    order: dict[str, int] = {}
    prepared = _PARAM.sub(lambda m: f"${order.setdefault(m.group(1), len(order) + 1)}", statement).replace("%%", "%")
    args = ", ".join(psycopg.sql.Literal(params[name]).as_string(cursor.connection) for name in order)
    execute = f"EXECUTE bench_prepared({args})"
    _command(cursor, f"PREPARE bench_prepared AS {prepared}")
    try:
        for _ in range(5):
            _command(cursor, "SAVEPOINT bench_explain")
            _command(cursor, execute)
            _command(cursor, "ROLLBACK TO SAVEPOINT bench_explain")
        sixth = _explain_twice(cursor, _EXPLAIN + execute, None)
        _command(cursor, "SAVEPOINT bench_generic_mode")
        try:
            _command(cursor, "SET LOCAL plan_cache_mode = force_generic_plan")
            generic = _explain_twice(cursor, _EXPLAIN + execute, None)
        finally:
            _command(cursor, "ROLLBACK TO SAVEPOINT bench_generic_mode")
    finally:
        _command(cursor, "DEALLOCATE bench_prepared")
    return {"prepared": summarize(sixth), "generic": summarize(generic)}


class Explainer:
    """Explains every statement the engine sends while `catching` is on, just before it runs."""

    def __init__(self, engine: Engine) -> None:
        self.caught: list[dict[str, Any]] | None = None
        event.listen(engine, "before_cursor_execute", self._before)

    @contextmanager
    def catching(self) -> Iterator[list[dict[str, Any]]]:
        self.caught = []
        try:
            yield self.caught
        finally:
            self.caught = None

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        caught = self.caught
        if caught is None or not statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
            return
        params = parameters[0] if many else parameters  # executemany: one row's plan, the rows are alike
        self.caught = None  # our own EXPLAINs are not caught
        try:
            with cursor.connection.cursor() as raw:
                entry: dict[str, Any] = {
                    "sql": statement,
                    "rows_sent": len(parameters) if many else 1,
                    "custom": summarize(_explain_twice(raw, _EXPLAIN + statement, params)),
                }
                if params and not statement.lstrip().upper().startswith("INSERT"):
                    for kind, plan in _prepared(raw, statement, params).items():
                        same = plan["shape"] == entry["custom"]["shape"]
                        entry[kind] = {"same_plan_as_custom": True, "ms": plan["ms"]} if same else plan
        finally:
            self.caught = caught
        caught.append(entry)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def shape(node: dict[str, Any]) -> str:
    """`Limit › Index Scan Backward ix_jobs_tenant_id_id`: the plan's nodes, index or table, children in ()."""
    label = node["Node Type"] + (" Backward" if node.get("Scan Direction") == "Backward" else "")
    if "Index Name" in node:
        label += f" {node['Index Name']}"
    elif node["Node Type"] == "Seq Scan":
        label += f" {node['Relation Name']}"
    children = node.get("Plans", [])
    if len(children) == 1:
        return f"{label} › {shape(children[0])}"
    shapes = [shape(c) for c in children]
    if len(shapes) > 2 and len(set(shapes)) == 1:  # e.g. a BitmapOr of one index scan per watched job
        return f"{label} ({len(shapes)} × {shapes[0]})"
    if children:
        return f"{label} ({' + '.join(shapes)})"
    return label


def summarize(plan: dict[str, Any]) -> dict[str, Any]:
    root = plan["Plan"]
    nodes = list(_nodes(root))
    scans = [n for n in nodes if n["Node Type"].endswith("Scan") and not n["Node Type"].startswith("Bitmap Index")]
    read = sum(round((n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"]) for n in scans)
    sorted_rows = [
        n["Plans"][0]["Actual Rows"] * n["Plans"][0]["Actual Loops"] for n in nodes if n["Node Type"] == "Sort"
    ]
    return {
        "shape": shape(root),
        "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
        "rows": root["Actual Rows"],
        "rows_read": read,
        "rows_sorted": sum(sorted_rows),
        "ms": round(plan["Execution Time"], 3),
        "planning_ms": round(plan["Planning Time"], 3),
        "trigger_ms": round(sum(t["Time"] for t in plan.get("Triggers", [])), 3),
        "shared_hit": root.get("Shared Hit Blocks", 0),
        "shared_read": root.get("Shared Read Blocks", 0),
    }
