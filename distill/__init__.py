"""Distillery's engine: train a small student to imitate a large teacher.

A plain library (torch + pydantic + numpy, optional onnxruntime): no web, no database, no environment
variables. The worker and the `python -m distill` command pass every value explicitly.
"""

from distill.config import JobConfig
from distill.errors import Cancelled, DistillError, UserError

__all__ = ["Cancelled", "DistillError", "JobConfig", "UserError"]
