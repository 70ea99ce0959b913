"""Check a job before it is queued: everything that can fail on the user's input, without training.

The service calls this at submission so that a bad spec is a 422 naming the field, not a job that
fails minutes later: the data, the teacher, the student, and every layer a knowledge term names (checked
against dry-run listings, exactly as the engine will pair and size them). The config must carry local
paths (the service resolves its file ids first).
"""

from __future__ import annotations

from distill.config import JobConfig
from distill.data import load_data
from distill.errors import UserError
from distill.knowledge import build_knowledge
from distill.models import build_model, feature_layers
from distill.modes import needs_file_teacher
from distill.modes.context import network_layers, teacher_layers
from distill.modes.online import check_trainable
from distill.students import build_student
from distill.teachers import load_teacher


def check_job(config: JobConfig) -> None:
    """Raise UserError (with `param` = the offending field) if the job cannot run as specified."""
    data = load_data(config.dataset, seed=config.training.seed)
    labeled = data.train.num_labeled > 0
    if not labeled and "lambda_" in config.knowledge.model_fields_set and config.knowledge.lambda_ > 0:
        raise UserError(
            "the transfer set has no labels, so there is no hard-label term to weight: set knowledge.lambda to 0 "
            "(only the soft term T²·KL is used)",
            code="invalid_job",
            param="knowledge.lambda",
        )
    if config.baseline and not labeled:
        raise UserError("baseline needs labels in the transfer set (dataset.train has none)", param="baseline")
    if not needs_file_teacher(config) and not labeled:
        what = "self-distillation" if config.mode == "self" else "an online teacher trained from scratch"
        raise UserError(f"{what} learns from the labels: dataset.train has none", param="dataset.train")

    teacher = None
    if needs_file_teacher(config):
        spec = config.teacher_spec()
        if spec.path is None:
            raise UserError("the engine needs teacher.path (a local file)", param="teacher.path")
        teacher = load_teacher(
            spec.path,
            format=spec.format,
            architecture=spec.architecture,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            device="cpu",
        )
    num_classes = data.num_classes or (teacher.output_size(data.input_shape) if teacher else 0)
    student = build_student(config.student, input_shape=data.input_shape, num_classes=num_classes)
    if config.mode == "offline" and teacher is not None:
        build_knowledge(
            config.knowledge,
            teacher=teacher_layers(teacher, data.input_shape),
            student=network_layers(student, data.input_shape),
            labeled=labeled,
        )
    if config.mode == "online":
        spec = config.teacher_spec()
        if teacher is not None:
            check_trainable(teacher)
        if spec.init == "scratch" and spec.architecture is not None:
            build_model(
                spec.architecture, input_shape=data.input_shape, num_classes=num_classes, param="teacher.architecture"
            )
    if (
        config.mode == "self"
        and config.self_ is not None
        and config.self_.method == "heads"
        and not feature_layers(student)
    ):
        raise UserError(
            "self method 'heads' needs a student with named stages (a registry architecture that lists feature_layers)",
            param="self.method",
        )
