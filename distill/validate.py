"""Check a job before it is queued: everything that can fail on the user's input, without training.

The service calls this at submission so that a bad spec is a 422 naming the field, not a job that
fails minutes later. The config must carry local paths (the service resolves its file ids first).
"""

from __future__ import annotations

from distill.config import JobConfig
from distill.data import load_data
from distill.errors import UserError
from distill.models import build_model
from distill.teachers import load_teacher


def check_job(config: JobConfig) -> None:
    """Raise UserError (with `param` = the offending field) if the job cannot run as specified."""
    if config.teacher.path is None:
        raise UserError("the engine needs teacher.path (a local file)", param="teacher.path")
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
    teacher = load_teacher(
        config.teacher.path,
        format=config.teacher.format,
        architecture=config.teacher.architecture,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        device="cpu",
    )
    num_classes = data.num_classes or teacher.output_size(data.input_shape)
    build_model(config.student.architecture, input_shape=data.input_shape, num_classes=num_classes)
