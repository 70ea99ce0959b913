"""Cursor pagination shared by every list endpoint: `?limit=&after=` → `{"data": [...], "has_more": bool}`.

The cursor is the last id the client saw. Ids sort by creation time (app.models.base.new_id), so a cursor
stays valid while new rows arrive, unlike an offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import Query

from app.errors import InvalidRequest

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Integer cursors are bigint ids: a larger one would overflow the query parameter (a 500), so it is a 422.
BIGINT_MAX = 2**63 - 1

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
AfterQuery = Annotated[str | None, Query(max_length=64, description="Cursor: the last id of the previous page.")]
IdCursor = Annotated[
    int | None, Query(ge=0, le=BIGINT_MAX, description="Cursor: the last id already seen; only newer rows.")
]


def split_page(rows: Sequence[T], limit: int) -> tuple[list[T], bool]:
    """Repositories fetch `limit + 1` rows; the extra one only says whether there is a next page."""
    return list(rows[:limit]), len(rows) > limit


def event_cursor(last_event_id: str) -> int:
    """A `Last-Event-ID` header as an event cursor: an id this API sent (0..bigint), else 422 naming it."""
    value = last_event_id.strip()
    if not value.isascii() or not value.isdigit() or int(value) > BIGINT_MAX:
        raise InvalidRequest("Last-Event-ID must be an event id (a non-negative integer)", param="Last-Event-ID")
    return int(value)
