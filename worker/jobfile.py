"""Turn a job's spec (file ids, as submitted) into the engine's job.json (local paths).

The engine never sees the database: the worker looks each uploaded file up (same tenant, right purpose)
and writes its absolute path into `distill.config.JobConfig`. Built-in datasets (`builtin:NAME`) pass as
is. Every other reference is a file id, never a path: a spec can only reach files its tenant uploaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import File
from app.settings import Settings
from distill.config import JobConfig
from distill.errors import UserError

BUILTIN_PREFIX = "builtin:"
TEACHER_FORMATS = ("torchscript", "onnx", "safetensors", "state_dict")


def _file(session: Session, *, file_id: str, tenant_id: str, purpose: str, param: str) -> File:
    row = session.execute(select(File).where(File.id == file_id, File.tenant_id == tenant_id)).scalar_one_or_none()
    if row is None:
        raise UserError(f"file {file_id} no longer exists (was it deleted?)", code="file_not_found", param=param)
    if row.purpose != purpose:
        raise UserError(f"file {file_id} is a {row.purpose}, not a {purpose}", code="wrong_file_purpose", param=param)
    return row


def _local_path(settings: Settings, row: File, param: str) -> str:
    path = settings.upload_path(row.storage_path).resolve()
    if not path.is_file():
        raise UserError(f"the stored copy of file {row.id} is missing", code="file_not_found", param=param)
    return str(path)


def resolve_spec(session: Session, *, spec: dict[str, Any], tenant_id: str, settings: Settings) -> JobConfig:
    """The engine's config for `spec`; raises UserError for a file that is gone or of the wrong purpose."""
    try:
        config = JobConfig.model_validate(spec)
    except ValidationError as exc:  # the API validated it at submission: a mismatch here is our bug
        raise RuntimeError(f"stored job spec does not match distill.config.JobConfig: {exc}") from exc

    teacher = config.teacher
    # Self mode has no teacher, and an online teacher trained from scratch has no file.
    if teacher is not None and teacher.init == "checkpoint":
        if teacher.file_id is None:
            raise RuntimeError("stored job spec names a teacher path instead of a file id")
        row = _file(session, file_id=teacher.file_id, tenant_id=tenant_id, purpose="teacher", param="teacher.file_id")
        path = _local_path(settings, row, "teacher.file_id")
        fmt = teacher.format or (row.format if row.format in TEACHER_FORMATS else None)
        config.teacher = teacher.model_copy(update={"path": path, "file_id": None, "format": fmt})

    student = config.student
    if student.file_id is not None:  # an uploaded ONNX student
        row = _file(session, file_id=student.file_id, tenant_id=tenant_id, purpose="student", param="student.file_id")
        path = _local_path(settings, row, "student.file_id")
        config.student = student.model_copy(update={"path": path, "file_id": None})

    updates: dict[str, str] = {}
    for name in ("train", "validation"):
        value = getattr(config.dataset, name)
        if isinstance(value, str) and not value.startswith(BUILTIN_PREFIX):
            param = f"dataset.{name}"
            row = _file(session, file_id=value, tenant_id=tenant_id, purpose="dataset", param=param)
            updates[name] = _local_path(settings, row, param)
    if updates:
        config.dataset = config.dataset.model_copy(update=updates)
    return config


def write_job_file(config: JobConfig, path: Path) -> None:
    """Write job.json atomically (a resumed attempt may read the previous one while this one writes)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2))
    os.replace(tmp, path)
