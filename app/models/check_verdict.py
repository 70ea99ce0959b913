"""A submission check that passed (migration 0007): a job with the same models, data and knowledge is not
checked again (app/checks/verdicts.py says what the key covers).

Only passes are kept. A refusal is never remembered, so a hostile upload runs in the sandboxed probe, and
is refused, every time it is submitted. Rows are per tenant: a fast answer must not tell one tenant that
another uploaded the same bytes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class CheckVerdict(Base):
    __tablename__ = "check_verdicts"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of what the verdict depends on
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
