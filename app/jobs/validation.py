"""Submission-time checks of a JobCreate: every failure is a 422 naming the field, before anything is queued.

Three steps, so that no request holds a database connection while a model runs (DESIGN §2):
1. `plan_job` (a read in the request's session, ended before step 2): the files it names (exist, this
   tenant's, right purpose), rules we can read off file metadata, the engine's job document with local
   paths, and whether the same check passed before (app/checks/verdicts.py: then step 2 is skipped);
2. `check_planned_job` (no session; a probe slot; `check_once` runs identical ones once): the engine's own
   `check_job` (loads the data and the teacher, builds the student, pairs the layers). With an uploaded
   model in the spec it runs in the sandboxed probe (`python -m distill check job.json --json`,
   app/probe.py), never in this process; its UserError `param` is translated back to the client's field;
3. `lock_files` (the request's transaction, just before the job row is written): the files again,
   locked FOR SHARE, so a concurrent DELETE (which locks them FOR UPDATE) either finishes first and the
   job is refused, or waits and then sees the job and is refused itself.
When the check passed before, the job is written in step 1's transaction: then step 1 reads the files
FOR SHARE (`plan_job(lock=True)`) and step 3 is that read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy.orm import Session

from app.checks import repository as verdicts_repository
from app.checks import verdicts
from app.errors import InvalidRequest
from app.files import repository as files_repository
from app.files.repository import FileFacts
from app.jobs.schemas import JobCreate
from app.jobs.spec import FILE_FIELDS, field_value
from app.probe import ProbeCrashed, ProbeLimits, run_probe
from app.settings import Settings
from distill.config import JobConfig
from distill.data import BUILTIN_PREFIX, DATASETS, builtin_name
from distill.errors import UserError
from distill.validate import check_job

log = logging.getLogger(__name__)
MODEL_FIELDS = ("teacher.file_id", "student.file_id")  # uploads that are programs: checked in the probe only
PROBE_FAILED = "the submitted models could not be checked (our error, logged); try again or contact the operators"

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


@dataclass(frozen=True)
class PlannedCheck:
    """What step 2 needs, read from the database in step 1 (so it holds no connection while it runs)."""

    config: JobConfig
    file_ids: dict[str, str]  # client field -> file id, for step 3
    inputs: list[Path] = field(default_factory=list)  # uploads the probe may read
    model_field: str | None = None  # the upload a timeout is blamed on (a model first); None: nothing uploaded
    verdict: str = ""  # the key its pass is remembered under (app/checks/verdicts.py)
    passed: bool = False  # the same check passed before (in this process, or stored): step 2 is skipped


def plan_job(session: Session, *, tenant: str, settings: Settings, spec: JobCreate, lock: bool = False) -> PlannedCheck:
    """Step 1: 422 for files that are missing, another tenant's or of the wrong purpose, and metadata rules.

    `lock`: read the files FOR SHARE (step 3 done here), for a job written in this same transaction."""
    body = spec.model_dump(by_alias=True)
    files = _referenced_files(session, tenant=tenant, body=body, lock=lock)
    _check_labels(spec, files)
    config = engine_config(spec, files, settings)
    models = [name for name in MODEL_FIELDS if name in files]
    probe = None
    if files:  # checked in the probe, under its limits (the folders it hides are not part of a verdict)
        probe = {k: v for k, v in asdict(ProbeLimits.from_settings(settings)).items() if k != "hidden"}
    key = verdicts.verdict_key(
        tenant=tenant, job=_engine_body(spec, files, lambda file: f"sha256:{file.sha256}:{file.format}"), probe=probe
    )
    passed = verdicts.remembered(key)
    if not passed and files and verdicts_repository.has_passed(session, tenant=tenant, key=key):
        verdicts.remember(key)
        passed = True
    return PlannedCheck(
        config=config,
        file_ids={name: file.id for name, file in files.items()},
        inputs=[settings.upload_path(file.storage_path) for file in files.values()],
        model_field=models[0] if models else next(iter(files), None),
        verdict=key,
        passed=passed,
    )


async def check_once(
    plan: PlannedCheck, *, spec: JobCreate, settings: Settings, limiter: anyio.CapacityLimiter
) -> None:
    """Step 2 for the endpoint: nothing if the check passed before; identical checks at once run once."""
    if plan.passed:
        return

    async def check() -> None:
        await anyio.to_thread.run_sync(lambda: check_planned_job(plan, spec=spec, settings=settings), limiter=limiter)

    await verdicts.once(plan.verdict, check)


def check_planned_job(plan: PlannedCheck, *, spec: JobCreate, settings: Settings) -> None:
    """Step 2 (blocking: run it in a thread of the probe limiter). 422 naming the field for any problem."""
    try:
        if not plan.inputs:
            check_job(plan.config)  # built-in data and registry architectures: nothing uploaded is read
        else:
            _probe(plan, settings=settings)
    except UserError as exc:
        if exc.code in ("probe_timeout", "probe_limit_exceeded"):
            raise InvalidRequest.from_user_error(exc, param=plan.model_field) from None
        raise InvalidRequest.from_user_error(exc, param=client_param(exc.param, spec)) from None
    except ProbeCrashed:
        _refuse_deleted_inputs(plan)  # a file deleted while the probe ran is the client's race, not our error
        log.exception("job check probe failed (models: %s)", plan.file_ids)
        raise InvalidRequest(PROBE_FAILED, code="probe_failed", param=None) from None


def _refuse_deleted_inputs(plan: PlannedCheck) -> None:
    """422 file_not_found, as lock_files says it, for an upload whose bytes are gone (a DELETE committed
    after step 1: the sandbox could not mount it). `inputs` follow `file_ids`' order (plan_job)."""
    for (name, file_id), path in zip(plan.file_ids.items(), plan.inputs, strict=False):
        if not path.exists():
            raise InvalidRequest(
                f"file {file_id!r} was deleted while the job was being submitted", code="file_not_found", param=name
            )


def _probe(plan: PlannedCheck, *, settings: Settings) -> None:
    document = plan.config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    run_probe(
        ["check", "job.json", "--json"],
        limits=ProbeLimits.from_settings(settings),
        inputs=plan.inputs,
        files={"job.json": json.dumps(document)},
    )


def lock_files(session: Session, *, tenant: str, plan: PlannedCheck) -> None:
    """Step 3: lock the job's files FOR SHARE until the request commits; 422 for one deleted since step 1."""
    locked = files_repository.lock_many(session, tenant=tenant, file_ids=set(plan.file_ids.values()))
    for name, file_id in plan.file_ids.items():
        if file_id not in locked:
            raise InvalidRequest(
                f"file {file_id!r} was deleted while the job was being submitted", code="file_not_found", param=name
            )


def validate_job(session: Session, *, tenant: str, settings: Settings, spec: JobCreate) -> PlannedCheck:
    """Steps 1 and 2 in one go, on one session (scripts and tests; endpoints split them, see above)."""
    plan = plan_job(session, tenant=tenant, settings=settings, spec=spec)
    if not plan.passed:
        check_planned_job(plan, spec=spec, settings=settings)
        verdicts.remember(plan.verdict)
    return plan


def _referenced_files(session: Session, *, tenant: str, body: dict[str, Any], lock: bool) -> dict[str, FileFacts]:
    """field → the facts of each file-id field's file; 422 for a missing file, another tenant's, or the wrong purpose.
    The files in one query (`lock`: FOR SHARE, until the transaction ends)."""
    wanted: dict[str, tuple[str, str]] = {}  # field -> (file id, purpose)
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
        wanted[dotted] = (value, purpose)
    rows = files_repository.facts_of(
        session, tenant=tenant, file_ids={file_id for file_id, _ in wanted.values()}, lock=lock
    )
    found: dict[str, FileFacts] = {}
    for dotted, (value, purpose) in wanted.items():
        file = rows.get(value)
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


def _check_labels(spec: JobCreate, files: dict[str, FileFacts]) -> None:
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


def engine_config(spec: JobCreate, files: dict[str, FileFacts], settings: Settings) -> JobConfig:
    """The spec as the engine reads it: file ids replaced by local paths."""
    return JobConfig.model_validate(
        _engine_body(spec, files, lambda file: str(settings.upload_path(file.storage_path)))
    )


def _engine_body(spec: JobCreate, files: dict[str, FileFacts], refer: Callable[[FileFacts], str]) -> dict[str, Any]:
    """The engine's job document, each file id replaced by `refer(file)` (its path; or its content, for a
    verdict's key).

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
        teacher["path"] = refer(files["teacher.file_id"])
        del teacher["file_id"]
        body["teacher"] = teacher
    if spec.student.file_id is not None:
        student = dict(body["student"])
        student["path"] = refer(files["student.file_id"])
        del student["file_id"]
        body["student"] = student
    dataset = dict(body["dataset"])
    for key in ("train", "validation"):
        file = files.get(f"dataset.{key}")
        if file is not None:
            dataset[key] = refer(file)
    body["dataset"] = dataset
    return body
