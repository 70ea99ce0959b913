"""An API key of a tenant (`Authorization: Bearer dk_live_…`). Only its sha256 is stored.

The key is 256 random bits after a visible prefix, so a plain sha256 is as good as a slow hash here (nothing
to brute-force), and a lookup is one indexed read by `prefix` plus a constant-time compare of the digests.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, new_id, utcnow


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key_"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # The key's first characters (`dk_live_ab12cd34`): shown in listings, named to revoke, unique.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Updated at most once per Settings.key_touch_seconds, not on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
