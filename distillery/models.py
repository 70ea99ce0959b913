"""What the API answers, as typed objects (DESIGN §3). Fields the server adds later pass through unvalidated
(`extra="allow"`), so an older client keeps working against a newer server."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Purpose = Literal["teacher", "student", "dataset"]
JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class File(_Model):
    id: str
    purpose: str
    filename: str
    bytes: int
    sha256: str
    format: str
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class Progress(_Model):
    phase: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    fraction: float | None = None  # 0..1 of the whole job, every phase included
    eta_seconds: float | None = None


class JobError(_Model):
    code: str
    message: str
    param: str | None = None


class Artifact(_Model):
    name: str
    bytes: int
    sha256: str
    format: str


class Job(_Model):
    id: str
    status: str  # JobStatus; a plain str so that a status added later does not break old clients
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    progress: Progress = Field(default_factory=Progress)
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: JobError | None = None
    attempt: int = 0
    cancel_requested: bool = False
    artifacts: list[Artifact] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class Event(_Model):
    id: int
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class Metric(_Model):
    id: int
    name: str
    step: int
    epoch: int | None = None
    value: float
    created_at: datetime | None = None


T = TypeVar("T")


class Page(_Model, Generic[T]):
    """One page of a list endpoint: `{"data": [...], "has_more": bool}`; the cursor is the last item's id."""

    data: list[T]
    has_more: bool = False
