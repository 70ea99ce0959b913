"""The append-only log of a job (`GET /v1/jobs/{id}/events`): messages, state changes, errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntPK, UTCDateTime, utcnow

EventLevel = Literal["info", "warning", "error"]


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (CheckConstraint("level IN ('info', 'warning', 'error')", name="level"),)

    # An autoincrement id is the client's cursor (`?after=`): events are read in insertion order.
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    type: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
