"""HTTP shapes of jobs. The request body is the engine's own JobConfig, with the teacher given as a file id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.artifacts.schemas import ArtifactRead
from app.models import EventLevel, JobStatus
from distill.config import ArchitectureSpec, JobConfig, Spec, TeacherFormat


class TeacherCreate(Spec):
    """The service's teacher: an uploaded file. Clients never name server paths (the engine's `path`)."""

    file_id: str = Field(description="An uploaded file of purpose 'teacher'.")
    format: TeacherFormat | None = Field(None, description="Checkpoint format; detected at upload if omitted.")
    architecture: ArchitectureSpec | None = Field(
        None, description="Needed for formats that carry weights without code (safetensors, state_dict)."
    )


class JobCreate(JobConfig):
    """The body of POST /v1/jobs (DESIGN §3). Every field but `teacher` is the engine's JobConfig as is;
    `dataset.train` / `dataset.validation` are uploaded file ids (purpose 'dataset') or 'builtin:NAME'."""

    # The override narrows the engine's TeacherSpec (path or file_id) to a file id: the field's type changes,
    # which mypy cannot see is intended for a pydantic field.
    teacher: TeacherCreate  # type: ignore[assignment]


class Progress(BaseModel):
    model_config = ConfigDict(extra="ignore")

    phase: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    fraction: float | None = Field(None, description="0..1 of the whole job.")
    eta_seconds: float | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any] = Field(description="The submitted JobCreate, normalised (defaults filled in).")
    progress: Progress
    metrics: dict[str, Any] = Field(description="Latest scalars while running; final ones once finished.")
    error: JobError | None
    attempt: int = Field(description="How many times a worker has started this job.")
    cancel_requested: bool
    artifacts: list[ArtifactRead]


class JobList(BaseModel):
    data: list[JobRead]
    has_more: bool


class EventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Increasing; pass the last one as ?after= to read only newer events.")
    created_at: datetime
    level: EventLevel
    type: str
    message: str
    data: dict[str, Any]


class EventList(BaseModel):
    data: list[EventRead]
    has_more: bool


class MetricRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str = Field(description="e.g. train/loss, val/top1.")
    step: int
    epoch: int | None
    value: float
    created_at: datetime


class MetricList(BaseModel):
    data: list[MetricRead]
    has_more: bool
