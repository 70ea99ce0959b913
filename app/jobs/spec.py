"""Reading the file references out of a job spec (the normalised JobCreate stored in jobs.spec)."""

from __future__ import annotations

from typing import Any

from distill.data import BUILTIN_PREFIX

# (dotted field, purpose the file must have); dataset fields may instead name a builtin.
FILE_FIELDS: tuple[tuple[str, str], ...] = (
    ("teacher.file_id", "teacher"),
    ("student.file_id", "student"),
    ("dataset.train", "dataset"),
    ("dataset.validation", "dataset"),
)


def field_value(spec: dict[str, Any], dotted: str) -> Any:
    value: Any = spec
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def referenced_file_ids(spec: dict[str, Any]) -> set[str]:
    """The uploaded files a job reads (builtins excluded)."""
    ids = set()
    for dotted, _ in FILE_FIELDS:
        value = field_value(spec, dotted)
        if isinstance(value, str) and not value.startswith(BUILTIN_PREFIX):
            ids.add(value)
    return ids
