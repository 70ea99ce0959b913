"""HTTP shapes of jobs. The request body is the engine's own JobConfig, with the teacher given as a file id."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.artifacts.schemas import ArtifactRead
from app.models import EventLevel, JobStatus
from distill.config import ArchitectureSpec, JobConfig, Spec, TeacherFormat


def field_error(model: str, loc: tuple[str | int, ...], message: str) -> ValidationError:
    """A validation error at `loc` inside the model being validated.

    A model validator's ValueError is reported at the model itself; raised as a ValidationError it is
    nested at `loc`, so the 422 names the field (pydantic prefixes the outer location).
    """
    # The message goes in ctx, not the template: engine messages may contain braces.
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(model, [InitErrorDetails(type=error, loc=loc, input=None)])


class TeacherCreate(Spec):
    """The service's teacher: an uploaded file, or (online mode) an architecture trained from scratch.

    Clients never name server paths (the engine's `path`); the rules are those of the engine's TeacherSpec.
    """

    file_id: str | None = Field(None, description="An uploaded file of purpose 'teacher' (init 'checkpoint').")
    format: TeacherFormat | None = Field(None, description="Checkpoint format; detected at upload if omitted.")
    architecture: ArchitectureSpec | None = Field(
        None,
        description="Needed for formats that carry weights without code (safetensors, state_dict), and for "
        "init 'scratch'.",
    )
    init: Literal["checkpoint", "scratch"] = Field(
        "checkpoint",
        description="Online mode only: 'scratch' trains the teacher from random weights (then give "
        "teacher.architecture and no file_id).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TeacherCreate:
        if self.init == "scratch":
            if self.file_id is not None:
                raise field_error(
                    "TeacherCreate",
                    ("file_id",),
                    "a teacher with init 'scratch' starts from random weights: give no file_id",
                )
            if self.architecture is None:
                raise field_error(
                    "TeacherCreate", ("architecture",), "a teacher with init 'scratch' needs teacher.architecture"
                )
        elif self.file_id is None:
            raise field_error(
                "TeacherCreate",
                ("file_id",),
                "teacher.file_id is required: the id of a file uploaded with purpose 'teacher' "
                "(or init 'scratch' with teacher.architecture in mode 'online')",
            )
        return self


class StudentCreate(Spec):
    """The service's student: a registry architecture, or an uploaded ONNX graph by file id (never a path)."""

    architecture: ArchitectureSpec | None = Field(None, description="A registry student (GET /v1/architectures).")
    file_id: str | None = Field(None, description="An uploaded file of purpose 'student' (ONNX, any framework).")
    init: Literal["random", "weights"] = Field(
        "random", description="ONNX student: start from fresh weights (random) or from the graph's own (weights)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> StudentCreate:
        if (self.architecture is None) == (self.file_id is None):
            raise field_error(
                "StudentCreate",
                ("architecture",),
                "give exactly one of student.architecture or student.file_id (an uploaded ONNX graph)",
            )
        return self


# The engine's mode rules (JobConfig._mode_fits) raise one ValueError for the whole job; the field each
# message is about, by a phrase in it, checked in order. Anything else is about the mode itself.
_MODE_ERROR_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("knowledge.terms", ("knowledge", "terms")),
    ("teacher.init", ("teacher", "init")),
    ("no teacher", ("teacher",)),
    ("needs a teacher", ("teacher",)),
    ("self is only", ("self",)),
)


def mode_error_loc(message: str) -> tuple[str, ...]:
    for phrase, loc in _MODE_ERROR_FIELDS:
        if phrase in message:
            return loc
    return ("mode",)


class JobCreate(JobConfig):
    """The body of POST /v1/jobs (DESIGN §3). Every field but `teacher` and `student` is the engine's
    JobConfig as is; `dataset.train` / `dataset.validation` are uploaded file ids (purpose 'dataset') or
    'builtin:NAME'."""

    # The overrides narrow the engine's TeacherSpec / StudentSpec (path or file_id) to file ids: the fields'
    # types change, which mypy cannot see is intended for pydantic fields.
    teacher: TeacherCreate | None = Field(  # type: ignore[assignment]
        None, description="The teacher; required unless mode is 'self'."
    )
    student: StudentCreate  # type: ignore[assignment]

    @model_validator(mode="after")
    def _mode_fits(self) -> JobCreate:
        """The engine's rules (same name: this replaces its validator), with the error at the field it is about."""
        try:
            # A plain function at run time; mypy only sees pydantic's decorator proxy.
            JobConfig._mode_fits(self)  # type: ignore[operator]
        except ValueError as exc:
            message = str(exc)
            raise field_error("JobCreate", mode_error_loc(message), message) from None
        return self


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
    time_budget_seconds: int | None = Field(
        default=None, description="Wall-clock seconds the job may train (its tenant's limit at submission)."
    )
    artifacts: list[ArtifactRead]
    mlflow_run_id: str | None = Field(
        default=None, description="The job's MLflow run id when MLflow tracking is on (a resumed job keeps it)."
    )


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
