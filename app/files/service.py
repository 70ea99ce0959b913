"""Rules for uploaded files: what a valid upload is, and when a file may be deleted. Never commits."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

from sqlalchemy.orm import Session

from app.architectures.service import check_input_shape
from app.auth.quotas import check_storage
from app.db import after_commit, after_rollback
from app.errors import Conflict, InvalidRequest, NotFound
from app.files import repository
from app.files.onnx_meta import onnx_meta, read_onnx, student_format
from app.files.upload import FILE_FIELD, ReceivedUpload, dataset_limits
from app.jobs import repository as jobs_repository
from app.jobs.spec import referenced_file_ids
from app.models import FILE_PURPOSES, File, new_id
from app.pagination import split_page
from app.settings import Settings
from distill.data import describe_array_file
from distill.data.arrays import ArrayLimits
from distill.errors import UserError
from distill.teachers import detect_format

_PURPOSES = "'teacher' (a checkpoint), 'student' (an ONNX graph) or 'dataset' (an .npz)"


def create_file(session: Session, *, tenant: str, settings: Settings, upload: ReceivedUpload) -> File:
    """Check the upload (purpose, then format), move it to its final place and record it.

    Whatever is refused is deleted from disk; a file whose row is rolled back is deleted too.
    """
    try:
        purpose = _check_purpose(upload.fields.get("purpose"))
        if upload.path is None:
            raise InvalidRequest(
                "no file was sent: put it in a multipart part named 'file'", code="missing_file", param=FILE_FIELD
            )
        file_format, meta = inspect_upload(purpose, str(upload.path), limits=dataset_limits(settings))
        check_storage(session, tenant=tenant, settings=settings, incoming_bytes=upload.bytes)
    except BaseException:
        upload.discard()
        raise
    assert upload.path is not None
    file_id = new_id("file_")
    storage_path = f"{tenant}/{file_id}"  # per tenant: tenant ids are folder-safe (app.auth.service.TENANT_RE)
    final_path = settings.upload_path(storage_path)
    final_path.parent.mkdir(exist_ok=True)
    os.replace(upload.path, final_path)
    after_rollback(session, lambda: final_path.unlink(missing_ok=True))
    return repository.add(
        session,
        File(
            id=file_id,
            tenant_id=tenant,
            purpose=purpose,
            filename=_clean_filename(upload.filename),
            bytes=upload.bytes,
            sha256=upload.sha256,
            format=file_format,
            meta=meta,
            storage_path=storage_path,
        ),
    )


def inspect_upload(purpose: str, path: str, *, limits: ArrayLimits | None = None) -> tuple[str, dict[str, Any]]:
    """(format, meta) of an upload, from the engine's own readers; their UserError becomes a 422 on `file`."""
    try:
        if purpose == "teacher":
            file_format = detect_format(path)
            return file_format, teacher_meta(path, file_format)
        if purpose == "student":
            return student_format(path)
        return "npz", describe_array_file(path, param=FILE_FIELD, limits=limits)
    except UserError as exc:
        raise InvalidRequest.from_user_error(exc, param=FILE_FIELD) from None


def teacher_meta(path: str, file_format: str) -> dict[str, Any]:
    """What a teacher's header says without loading it: `input_shape` from a safetensors file's metadata
    (`save_file(..., metadata={"input_shape": "1,28,28"})`) or an ONNX graph's declared input, the default
    of its layers listing."""
    if file_format == "onnx":
        model = read_onnx(path)  # detect_format has read it once already: it parses
        return {} if model is None else onnx_meta(model)
    if file_format != "safetensors":
        return {}
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))  # detect_format has checked that this is a JSON object
    text = (header.get("__metadata__") or {}).get("input_shape")
    if not isinstance(text, str):
        return {}
    try:
        shape = [int(part) for part in text.strip("[]() ").split(",") if part.strip()]
        check_input_shape(tuple(shape))
    except (ValueError, InvalidRequest):
        return {}  # a label someone else wrote: not worth refusing the upload over
    return {"input_shape": shape}


def get_file(session: Session, *, tenant: str, file_id: str) -> File:
    file = repository.get(session, tenant=tenant, file_id=file_id)
    if file is None:
        raise NotFound(f"no file {file_id!r}")
    return file


def list_files(
    session: Session, *, tenant: str, limit: int, after: str | None, purpose: str | None
) -> tuple[list[File], bool]:
    return split_page(repository.list_page(session, tenant=tenant, limit=limit, after=after, purpose=purpose), limit)


def delete_file(session: Session, *, tenant: str, settings: Settings, file_id: str) -> None:
    """Delete the row now and the bytes once that is committed; refused while an active job needs the file.

    The row is locked first, so a job being submitted with this file (which holds it FOR SHARE) commits
    before the check below looks for active jobs, or finds the file gone: never both accepted."""
    file = repository.lock_for_delete(session, tenant=tenant, file_id=file_id)
    if file is None:
        raise NotFound(f"no file {file_id!r}")
    users = _active_jobs_using(session, tenant=tenant, file_id=file_id)
    if users:
        raise Conflict(
            f"file {file_id!r} is used by job(s) {', '.join(users)} that are not finished; cancel them first",
            code="file_in_use",
        )
    path = settings.upload_path(file.storage_path)
    repository.delete(session, file)
    after_commit(session, lambda: path.unlink(missing_ok=True))


def _active_jobs_using(session: Session, *, tenant: str, file_id: str) -> Sequence[str]:
    # Few jobs are active at once, so reading their specs beats a JSON query that differs per database.
    active = jobs_repository.list_active(session, tenant=tenant)
    return [job.id for job in active if file_id in referenced_file_ids(job.spec)]


def _check_purpose(value: str | None) -> str:
    if value is None or value == "":
        raise InvalidRequest(f"purpose is required: {_PURPOSES}", param="purpose")
    if value not in FILE_PURPOSES:
        raise InvalidRequest(f"purpose must be {_PURPOSES}, got {value!r}", param="purpose")
    return value


def _clean_filename(name: str | None) -> str:
    """The client's base name only (no folders), at most 255 characters: it is a label, never a path."""
    base = PurePath((name or "").replace("\\", "/")).name
    return (base or "upload")[:255]
