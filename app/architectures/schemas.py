"""HTTP shapes of the architecture registry and of layer listings (architectures and uploaded files)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ArchitectureRead(BaseModel):
    name: str = Field(description="The registry key to use in `architecture.name`.")
    description: str
    parameters: dict[str, Any] = Field(
        description="Every builder argument with its default; those in `required` have none (null). In a job, "
        "input_shape and num_classes are inferred from the data and the teacher unless given in kwargs."
    )
    required: list[str] = Field(description="Arguments without a default.")


class ArchitectureList(BaseModel):
    data: list[ArchitectureRead]


class LayerRead(BaseModel):
    path: str = Field(description="Module path, as `knowledge.terms[i].layers[j].teacher` / `.student` name it.")
    shape: list[int] | None = Field(
        description="Output shape of one example (no batch dim); null where the format cannot tell (TorchScript)."
    )
    type: str = Field(description="The module's class, e.g. Conv2d, Sequential.")


class LayerList(BaseModel):
    input_shape: list[int] = Field(description="The example shape the dry run used (no batch dim).")
    data: list[LayerRead] = Field(description="Every module a forward pass calls, in call order.")
    note: str | None = Field(
        None, description="Set when the format shows fewer layers than knowledge terms could read, and why."
    )
