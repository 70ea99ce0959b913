"""Teacher checkpoints: detect their format from the bytes and load them without executing uploaded code.

fmt = detect_format(path)                       # at upload: safe and quick for any bytes
teacher = load_teacher(path, format=None, architecture=spec.architecture,
                       input_shape=(1, 28, 28), num_classes=10, device="cpu")
logits = teacher.logits(x)                      # float32 (N, C), no grad, on x.device
"""

from distill.config import TeacherFormat
from distill.teachers.base import Teacher
from distill.teachers.detect import SUPPORTED, detect_format
from distill.teachers.load import load_teacher
from distill.teachers.pickled import HOW_TO_EXPORT

__all__ = ["HOW_TO_EXPORT", "SUPPORTED", "Teacher", "TeacherFormat", "detect_format", "load_teacher"]
