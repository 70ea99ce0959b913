"""HTTP shapes of uploaded files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import FilePurpose


class FileRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    purpose: FilePurpose
    filename: str
    bytes: int = Field(description="Size in bytes.")
    sha256: str = Field(description="Hex SHA-256 of the bytes as received.")
    format: str = Field(
        description="teacher: torchscript | onnx | safetensors | state_dict; dataset: npz.",
    )
    meta: dict[str, Any] = Field(
        description="dataset: num_examples, input_shape, num_classes, labeled, num_labeled. Teacher: input_shape "
        "when a safetensors file's metadata records one (the default of GET /v1/files/{id}/layers), else empty."
    )
    created_at: datetime


class FileList(BaseModel):
    data: list[FileRead]
    has_more: bool
