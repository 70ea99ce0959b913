"""An uploaded teacher checkpoint or dataset (`POST /v1/files`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, new_id, utcnow

FilePurpose = Literal["teacher", "student", "dataset"]
FILE_PURPOSES: tuple[str, ...] = ("teacher", "student", "dataset")


class File(Base):
    __tablename__ = "files"
    __table_args__ = (CheckConstraint("purpose IN ('teacher', 'student', 'dataset')", name="purpose"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("file_"))
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # teacher: torchscript | onnx | safetensors | state_dict; dataset: npz
    format: Mapped[str] = mapped_column(String(32))
    # dataset: {num_examples, input_shape, num_classes, labeled}; teacher: {input_shape} when its header has one.
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Relative to Settings.upload_dir (an absolute path is used as is): see Settings.upload_path.
    storage_path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
