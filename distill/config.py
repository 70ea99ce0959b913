"""The job document: the same shape as the body of `POST /v1/jobs` (DESIGN §3).

The service refers to uploaded files by `file_id`; the engine only ever sees local paths. The worker
rewrites one into the other before it starts `python -m distill run`. Every field has a description,
which `python -m distill run --help` prints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TeacherFormat = Literal["torchscript", "onnx", "safetensors", "state_dict"]

# Defaults chosen by the sweep in bench/quality.py (docs/BENCHMARKS.md explains the choice).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_LAMBDA = 0.5


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ArchitectureSpec(Spec):
    name: str = Field(description="A registered architecture: see `python -m distill archs`.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Builder arguments. input_shape and num_classes are inferred from the data and teacher "
        "unless given here.",
    )


class TeacherSpec(Spec):
    path: str | None = Field(None, description="Local path of the teacher checkpoint (engine and CLI).")
    file_id: str | None = Field(None, description="An uploaded file of purpose 'teacher' (service).")
    format: TeacherFormat | None = Field(None, description="Checkpoint format; detected from the file if omitted.")
    architecture: ArchitectureSpec | None = Field(
        None, description="Needed for formats that carry weights without code (safetensors, state_dict)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSpec:
        if (self.path is None) == (self.file_id is None):
            raise ValueError("give exactly one of teacher.path or teacher.file_id")
        return self


class StudentSpec(Spec):
    architecture: ArchitectureSpec = Field(description="The student to train.")


class DatasetSpec(Spec):
    train: str = Field(
        description="Transfer set: an .npz path (array x, optional integer y; y = -1 marks an unlabeled "
        "example), an uploaded file id, or a built-in such as 'builtin:digits'."
    )
    validation: str | None = Field(
        None, description="Validation set in the same forms; if omitted, a deterministic split of train."
    )
    validation_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of train held out when no validation set is given."
    )


class KnowledgeSpec(Spec):
    type: Literal["response"] = Field(
        "response", description="What is transferred. 'response': the teacher's softened outputs (Hinton 2015)."
    )
    temperature: float = Field(
        DEFAULT_TEMPERATURE, gt=0.0, le=1000.0, description="Softmax temperature T of the soft term."
    )
    lambda_: float = Field(
        DEFAULT_LAMBDA,
        alias="lambda",
        ge=0.0,
        description="Weight λ of the hard-label cross-entropy; loss = T²·KL(teacher‖student) + λ·CE.",
    )


class TrainingSpec(Spec):
    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the transfer set.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Examples per step.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Peak learning rate.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="Optimizer.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay (decoupled for adamw).")
    schedule: Literal["constant", "step", "cosine"] = Field("cosine", description="Learning-rate schedule.")
    step_size: int = Field(30, ge=1, description="Epochs between decays for the step schedule.")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="Decay factor for the step schedule.")
    grad_clip: float | None = Field(None, gt=0.0, description="Clip the global gradient norm to this value.")
    eval_every: int = Field(1, ge=1, description="Epochs between validations (the last epoch is always validated).")
    seed: int = Field(0, ge=0, description="Seed for weights, shuffling and augmentation: a CPU run repeats.")
    augment: Literal["none", "noise", "shift"] = Field(
        "none",
        description="Per-step input augmentation: Gaussian noise, or random shifts of up to 1 pixel for images. "
        "With augmentation the teacher must see the augmented inputs, so it runs live.",
    )
    cache_teacher: bool | None = Field(
        None,
        description="Compute teacher logits once and reuse them (offline, no augmentation). None = automatic.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA (bf16 autocast) if present.")


class JobConfig(Spec):
    teacher: TeacherSpec
    student: StudentSpec
    dataset: DatasetSpec
    knowledge: KnowledgeSpec = Field(default_factory=KnowledgeSpec)  # type: ignore[arg-type]
    mode: Literal["offline"] = Field("offline", description="offline: the teacher is frozen.")
    training: TrainingSpec = Field(default_factory=TrainingSpec)  # type: ignore[arg-type]
    baseline: bool = Field(
        False, description="Also train the same student without the teacher on the same budget, for comparison."
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Free-form labels, kept as is.")
