"""Submission-time checks of a JobCreate: every failure is a 422 naming the field, before anything is queued.

Order: the files it names (exist, this tenant's, right purpose), rules we can read off file metadata,
then the engine's own `check_job` on the spec with local paths (loads the data and the teacher, builds
the student), whose UserError `param` is translated back to the field the client sent.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.errors import InvalidRequest
from app.files import repository as files_repository
from app.jobs.schemas import JobCreate
from app.jobs.spec import FILE_FIELDS, field_value
from app.models import File
from app.settings import Settings
from distill.config import JobConfig
from distill.data import BUILTIN_PREFIX, DATASETS, builtin_name
from distill.errors import UserError
from distill.validate import check_job

# The engine names its own fields (the teacher's local path); the client sent the file id. Every other
# param (`knowledge.terms[1].layers[0].teacher`, `student.architecture`, ...) is the client's field as is.
_ENGINE_PARAMS = {
    "teacher": "teacher.file_id",
    "teacher.path": "teacher.file_id",
    "student.path": "student.file_id",
    "device": "training.device",
}


def client_param(param: str | None, spec: JobCreate) -> str | None:
    """The field the client sent for the engine's `param`. A teacher without a file (self mode, or trained
    from scratch) has no teacher.file_id to blame: there the engine's `teacher` is the teacher's architecture
    (or, in self mode, `teacher` itself)."""
    if param == "teacher" and (spec.teacher is None or spec.teacher.init == "scratch"):
        return "teacher" if spec.teacher is None else "teacher.architecture"
    return None if param is None else _ENGINE_PARAMS.get(param, param)


def validate_job(session: Session, *, tenant: str, settings: Settings, spec: JobCreate) -> None:
    body = spec.model_dump(by_alias=True)
    files = _referenced_files(session, tenant=tenant, body=body)
    _check_labels(spec, files)
    try:
        check_job(engine_config(spec, files, settings))
    except UserError as exc:
        raise InvalidRequest.from_user_error(exc, param=client_param(exc.param, spec)) from None


def _referenced_files(session: Session, *, tenant: str, body: dict[str, Any]) -> dict[str, File]:
    """field → File for each file-id field; 422 for a missing file, another tenant's, or the wrong purpose."""
    found: dict[str, File] = {}
    for dotted, purpose in FILE_FIELDS:
        value = field_value(body, dotted)
        if value is None:
            continue
        if purpose == "dataset" and value.startswith(BUILTIN_PREFIX):
            name = builtin_name(value)
            if name not in DATASETS:
                raise InvalidRequest(
                    f"unknown built-in dataset {name!r}; known: {', '.join(DATASETS.names())}",
                    code="unknown_dataset",
                    param=dotted,
                )
            continue
        file = files_repository.get(session, tenant=tenant, file_id=value)
        if file is None:
            hint = " or 'builtin:NAME'" if purpose == "dataset" else ""
            raise InvalidRequest(
                f"no uploaded file {value!r}; give the id of a file uploaded with purpose '{purpose}'{hint}",
                code="file_not_found",
                param=dotted,
            )
        if file.purpose != purpose:
            raise InvalidRequest(
                f"file {value!r} was uploaded with purpose '{file.purpose}', but {dotted} needs purpose '{purpose}'",
                code="wrong_file_purpose",
                param=dotted,
            )
        found[dotted] = file
    return found


def _check_labels(spec: JobCreate, files: dict[str, File]) -> None:
    """λ weighs the hard-label term; asked for explicitly on a transfer set with no labels, it means nothing.

    Read off the upload's metadata, so it needs no data loading (check_job repeats it for builtins).
    """
    train = files.get("dataset.train")
    if train is None or train.meta.get("labeled", True):
        return
    if "lambda_" in spec.knowledge.model_fields_set and spec.knowledge.lambda_ > 0:
        raise InvalidRequest(
            f"dataset.train ({train.id}) has no labels, so there is no hard-label term to weight: "
            "set knowledge.lambda to 0 (only the soft term T²·KL is used)",
            code="unlabeled_dataset",
            param="knowledge.lambda",
        )


def engine_config(spec: JobCreate, files: dict[str, File], settings: Settings) -> JobConfig:
    """The spec as the engine reads it: file ids replaced by local paths.

    Built from the fields the client set (exclude_unset), so the engine still tells given values from
    defaults (check_job only objects to a λ the client chose).
    """
    body = spec.model_dump(by_alias=True, exclude_unset=True)
    if "knowledge" in body and spec.knowledge.terms:
        # A term's `type` is the union's tag: a default the client left out (or the short form's normalised
        # term) must still be there for the engine to tell the terms apart.
        body["knowledge"]["terms"] = [
            {**term.model_dump(by_alias=True, exclude_unset=True), "type": term.type} for term in spec.knowledge.terms
        ]
    if spec.teacher is not None and spec.teacher.init == "checkpoint":
        # Self mode has no teacher, and one trained from scratch no file: only a checkpoint gets a path.
        teacher = dict(body["teacher"])
        teacher["path"] = str(settings.upload_path(files["teacher.file_id"].storage_path))
        del teacher["file_id"]
        body["teacher"] = teacher
    if spec.student.file_id is not None:
        student = dict(body["student"])
        student["path"] = str(settings.upload_path(files["student.file_id"].storage_path))
        del student["file_id"]
        body["student"] = student
    dataset = dict(body["dataset"])
    for key in ("train", "validation"):
        file = files.get(f"dataset.{key}")
        if file is not None:
            dataset[key] = str(settings.upload_path(file.storage_path))
    body["dataset"] = dataset
    return JobConfig.model_validate(body)
