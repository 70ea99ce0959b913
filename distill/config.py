"""The job document: the same shape as the body of `POST /v1/jobs` (DESIGN §3).

The service refers to uploaded files by `file_id`; the engine only ever sees local paths. The worker
rewrites one into the other before it starts `python -m distill run`. Every field has a description,
which `python -m distill run --help` prints.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.errors import UserError

TeacherFormat = Literal["torchscript", "onnx", "safetensors", "state_dict"]

# Defaults chosen by the sweep in bench/quality.py (docs/BENCHMARKS.md explains the choice).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_LAMBDA = 0.5
# Self-distillation softens the deepest head's outputs (Zhang et al. 2019 use T = 3).
DEFAULT_SELF_TEMPERATURE = 3.0


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
    init: Literal["checkpoint", "scratch"] = Field(
        "checkpoint",
        description="Online mode only: 'scratch' trains the teacher from random weights (then give "
        "teacher.architecture and no file).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSpec:
        if self.init == "scratch":
            if self.path is not None or self.file_id is not None:
                raise ValueError("a teacher with init 'scratch' starts from random weights: give no file")
            if self.architecture is None:
                raise ValueError("a teacher with init 'scratch' needs teacher.architecture")
            return self
        if (self.path is None) == (self.file_id is None):
            raise ValueError("give exactly one of teacher.path or teacher.file_id")
        return self


class StudentSpec(Spec):
    architecture: ArchitectureSpec | None = Field(
        None, description="A registry student (see `python -m distill archs`)."
    )
    path: str | None = Field(None, description="Local path of an ONNX student graph (engine and CLI).")
    file_id: str | None = Field(None, description="An uploaded file of purpose 'student' (ONNX, any framework).")
    init: Literal["random", "weights"] = Field(
        "random", description="ONNX student: start from fresh weights (random) or from the graph's own (weights)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> StudentSpec:
        given = [name for name in ("architecture", "path", "file_id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of student.architecture or student.file_id (an uploaded ONNX graph)")
        return self

    def describe(self) -> dict[str, Any]:
        """What the report and config.json say the student is."""
        if self.architecture is not None:
            return self.architecture.model_dump()
        return {"onnx": self.file_id or (self.path and self.path.rsplit("/", 1)[-1]), "init": self.init}


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


class LayerPair(Spec):
    """One (teacher layer, student layer) pairing by module path; for fsp each side is a list of two paths."""

    teacher: str | list[str] = Field(description="Teacher module path (fsp: two paths).")
    student: str | list[str] = Field(description="Student module path (fsp: two paths).")


class TermSpec(Spec):
    weight: float = Field(1.0, ge=0.0, le=1e6, description="Multiplier of this term in the total loss.")
    layers: list[LayerPair] | None = Field(
        None,
        max_length=64,
        description="(teacher, student) module paths; omitted = paired automatically (the events say how).",
    )


class ResponseTerm(TermSpec):
    type: Literal["response"] = "response"
    temperature: float = Field(
        DEFAULT_TEMPERATURE, gt=0.0, le=1000.0, description="Softmax temperature T of the soft term."
    )


class FeatureTerm(TermSpec):
    type: Literal["feature"] = "feature"
    method: Literal["fitnet", "attention"] = Field(
        description="fitnet: MSE through a learned adapter (Romero 2015); attention: AT, p = 2 (Zagoruyko 2017)."
    )
    hint_epochs: int = Field(
        0, ge=0, le=10_000, description="fitnet: epochs of a hint-only first stage before the full loss."
    )


class RelationTerm(TermSpec):
    type: Literal["relation"] = "relation"
    method: Literal["rkd", "sp", "fsp"] = Field(
        description="rkd: distance + angle (Park 2019); sp: similarity-preserving (Tung 2019); fsp: flow "
        "between two layers (Yim 2017)."
    )
    distance_weight: float = Field(25.0, ge=0.0, le=1e6, description="rkd: weight of the distance-wise term.")
    angle_weight: float = Field(50.0, ge=0.0, le=1e6, description="rkd: weight of the angle-wise term.")


Term = Annotated[ResponseTerm | FeatureTerm | RelationTerm, Field(discriminator="type")]


class KnowledgeSpec(Spec):
    """What is transferred: a weighted list of terms plus λ·CE on the labels.

    The short form `{"type": "response", "temperature": T, "lambda": λ}` means
    `{"lambda": λ, "terms": [{"type": "response", "temperature": T, "weight": 1}]}`; after validation the
    short-form fields are None and `terms` always holds the terms.
    """

    type: Literal["response"] | None = Field(
        None, description="Short form: the one response term (Hinton 2015). Use terms for anything else."
    )
    temperature: float | None = Field(
        None, gt=0.0, le=1000.0, description=f"Short form: temperature T (default {DEFAULT_TEMPERATURE})."
    )
    lambda_: float = Field(
        DEFAULT_LAMBDA,
        alias="lambda",
        ge=0.0,
        le=1e6,
        description="Weight λ of the hard-label cross-entropy; loss = Σ terms + λ·CE.",
    )
    terms: list[Term] | None = Field(
        None, min_length=1, max_length=16, description="Weighted knowledge terms (response, feature, relation)."
    )

    @model_validator(mode="after")
    def _normalise(self) -> KnowledgeSpec:
        if self.terms is None:
            temperature = DEFAULT_TEMPERATURE if self.temperature is None else self.temperature
            self.terms = [ResponseTerm.model_validate({"type": "response", "temperature": temperature})]
        elif self.type is not None or self.temperature is not None:
            raise ValueError("give either the short form (type, temperature) or terms, not both")
        self.type, self.temperature = None, None
        return self

    def response_terms(self) -> list[ResponseTerm]:
        return [t for t in self.terms or [] if isinstance(t, ResponseTerm)]


class SelfSpec(Spec):
    method: Literal["heads", "born_again"] = Field(
        "heads",
        description="heads: auxiliary classifiers on the student's stages learn from the deepest (Zhang 2019); "
        "born_again: generation k is taught by generation k-1 (Furlanello 2018).",
    )
    generations: int = Field(2, ge=2, le=10, description="born_again: students trained in sequence (>= 2).")
    temperature: float = Field(
        DEFAULT_SELF_TEMPERATURE, gt=0.0, le=1000.0, description="Temperature of the self-distillation KL."
    )


class TrainingSpec(Spec):
    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the transfer set.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Examples per step.")
    lr: float = Field(1e-3, ge=1e-12, le=10.0, description="Peak learning rate.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="Optimizer.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="Weight decay (decoupled for adamw).")
    schedule: Literal["constant", "step", "cosine"] = Field("cosine", description="Learning-rate schedule.")
    step_size: int = Field(30, ge=1, le=10_000, description="Epochs between decays for the step schedule.")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="Decay factor for the step schedule.")
    grad_clip: float | None = Field(None, gt=0.0, le=1e6, description="Clip the global gradient norm to this value.")
    eval_every: int = Field(
        1, ge=1, le=10_000, description="Epochs between validations (the last epoch is always validated)."
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed for weights, shuffling and augmentation: a CPU run repeats."
    )
    augment: Literal["none", "noise", "shift"] = Field(
        "none",
        description="Per-step input augmentation: Gaussian noise, or random shifts of up to 1 pixel for images. "
        "With augmentation the teacher must see the augmented inputs, so it runs live.",
    )
    cache_teacher: bool | None = Field(
        None,
        description="Compute teacher logits once and reuse them (offline, no augmentation). None = automatic.",
    )
    feature_cache_mb: int = Field(
        512, ge=0, le=1 << 20, description="Teacher feature maps are cached when they fit in this many MiB."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA (bf16 autocast) if present.")


class JobConfig(Spec):
    teacher: TeacherSpec | None = Field(None, description="The teacher; required unless mode is 'self'.")
    student: StudentSpec
    dataset: DatasetSpec
    knowledge: KnowledgeSpec = Field(default_factory=KnowledgeSpec)  # type: ignore[arg-type]
    mode: Literal["offline", "online", "self"] = Field(
        "offline",
        description="offline: the teacher is frozen; online: teacher and student learn from each other (deep "
        "mutual learning); self: no teacher, see self.",
    )
    self_: SelfSpec | None = Field(None, alias="self", description="mode 'self': how the student teaches itself.")
    training: TrainingSpec = Field(default_factory=TrainingSpec)  # type: ignore[arg-type]
    baseline: bool = Field(
        False, description="Also train the same student without the teacher on the same budget, for comparison."
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Free-form labels, kept as is.")

    @model_validator(mode="after")
    def _mode_fits(self) -> JobConfig:
        """Which parts each mode needs; field-level errors name the field (`teacher`, `self`, ...)."""
        if self.mode == "self":
            if self.teacher is not None:
                raise ValueError("mode 'self' has no teacher: remove teacher (the student teaches itself)")
            if self.self_ is None:
                self.self_ = SelfSpec.model_validate({})
            if any(t.type != "response" for t in self.knowledge.terms or []):
                raise ValueError("mode 'self' takes only response terms in knowledge.terms")
            return self
        if self.self_ is not None:
            raise ValueError("self is only for mode 'self'")
        if self.teacher is None:
            raise ValueError(f"mode '{self.mode}' needs a teacher")
        if self.teacher.init == "scratch" and self.mode != "online":
            raise ValueError("teacher.init 'scratch' is only for mode 'online' (an offline teacher must be trained)")
        if self.mode == "online" and any(t.type != "response" for t in self.knowledge.terms or []):
            raise ValueError("mode 'online' (deep mutual learning) takes only response terms in knowledge.terms")
        return self

    def teacher_spec(self) -> TeacherSpec:
        """The teacher, for modes that have one (validation guarantees it outside mode 'self')."""
        if self.teacher is None:
            raise UserError("this job has no teacher (mode 'self')", param="teacher")
        return self.teacher
