"""Cursor pagination shared by every list endpoint: `?limit=&after=` → `{"data": [...], "has_more": bool}`.

The cursor is the last id the client saw. Ids sort by creation time (app.models.base.new_id), so a cursor
stays valid while new rows arrive, unlike an offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import Query

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
