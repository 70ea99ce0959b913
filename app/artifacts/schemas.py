"""HTTP shapes of a job's artifacts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ArtifactRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str = Field(description="e.g. student.safetensors; download at /v1/jobs/{id}/artifacts/{name}.")
    bytes: int
    sha256: str = Field(description="Hex SHA-256; also the download's ETag.")
    format: str
