"""resolve_spec: the stored spec (file ids) becomes the engine's job.json (local paths) for every mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.jobs.schemas import JobCreate
from distill.cli import load_job_file
from distill.errors import UserError
from tests.worker.conftest import TENANT, add_file
from worker.jobfile import resolve_spec, write_job_file

STUDENT = {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}}


def stored(**fields: Any) -> dict[str, Any]:
    """What the API stores in jobs.spec: the normalised JobCreate."""
    body = {"student": STUDENT, "dataset": {"train": "builtin:digits"}, **fields}
    return JobCreate.model_validate(body).model_dump(mode="json", by_alias=True)


def test_teacher_files_become_paths_and_teacherless_modes_need_none(
    sessions: sessionmaker[Session], settings: Any, teacher_file: Path, tmp_path: Path
) -> None:
    teacher_id = add_file(sessions, settings, teacher_file, purpose="teacher", format="safetensors")
    arch = {"name": "mlp", "kwargs": {"hidden": [32]}}
    with sessions() as session:
        offline = resolve_spec(
            session,
            spec=stored(teacher={"file_id": teacher_id, "architecture": arch}),
            tenant_id=TENANT,
            settings=settings,
        )
        scratch = resolve_spec(
            session,
            spec=stored(mode="online", teacher={"init": "scratch", "architecture": arch}),
            tenant_id=TENANT,
            settings=settings,
        )
        heads = resolve_spec(session, spec=stored(mode="self"), tenant_id=TENANT, settings=settings)
        born = stored(mode="self", **{"self": {"method": "born_again", "generations": 3}})
        born_again = resolve_spec(session, spec=born, tenant_id=TENANT, settings=settings)
        with pytest.raises(UserError) as gone:
            resolve_spec(session, spec=stored(teacher={"file_id": "file_gone"}), tenant_id=TENANT, settings=settings)
    assert offline.teacher is not None and offline.teacher.file_id is None
    assert Path(str(offline.teacher.path)).read_bytes() == teacher_file.read_bytes()
    assert offline.teacher.format == "safetensors"
    assert scratch.teacher is not None and scratch.teacher.path is None and scratch.teacher.init == "scratch"
    assert heads.teacher is None and heads.self_ is not None and heads.self_.method == "heads"
    assert born_again.self_ is not None and born_again.self_.generations == 3
    assert gone.value.code == "file_not_found" and gone.value.param == "teacher.file_id"

    # job.json round-trips through the engine's own reader, the mode's fields intact.
    write_job_file(born_again, tmp_path / "job.json")
    written = json.loads((tmp_path / "job.json").read_text())
    assert "teacher" not in written and written["self"]["method"] == "born_again" and written["mode"] == "self"
    assert load_job_file(tmp_path / "job.json") == born_again
