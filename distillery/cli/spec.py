"""A job spec from a YAML or JSON file, with the local files it names uploaded and replaced by their ids.

The convention (the README's "Command line and Python client" has it too):

- `teacher.file` and `student.file` (or `path`, the engine's own job.json name) are local paths: each file is
  uploaded (purpose teacher / student) and the key becomes `file_id`;
- `dataset.train` and `dataset.validation` may be local paths where the API wants a file id: each is uploaded
  (purpose dataset) and replaced by its id; `builtin:NAME` and ids (`file_…`) are sent as they are;
- relative paths are resolved against the folder of the spec file (the current folder for stdin), `~` is
  expanded, and a file named twice is uploaded once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distillery.models import File, Purpose

_ROLES: tuple[tuple[str, Purpose], ...] = (("teacher", "teacher"), ("student", "student"))


class SpecError(Exception):
    """The spec file cannot be read or names a file that is not there (exit code 2)."""


@dataclass(frozen=True)
class LocalFile:
    field: str  # where the spec names it, e.g. dataset.train
    purpose: Purpose
    path: Path


def load_spec(source: str) -> tuple[dict[str, Any], Path]:
    """The spec as a dict, and the folder its relative paths are resolved against. `-` reads stdin."""
    if source == "-":
        text, base, is_json = sys.stdin.read(), Path.cwd(), False
    else:
        path = Path(source).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read {source}: {exc.strerror or exc}") from None
        base, is_json = path.resolve().parent, path.suffix.lower() == ".json"
    try:
        spec = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{source} is not valid {'JSON' if is_json else 'YAML'}: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{source} must hold a mapping (the body of POST /v1/jobs), not {type(spec).__name__}")
    return spec, base


def upload_local_files(spec: dict[str, Any], base: Path, upload: Callable[[LocalFile], File]) -> list[LocalFile]:
    """Upload every local file the spec names (see the module docstring) and put the ids in its place.
    Every path is checked before the first upload, so a typo uploads nothing. Returns what was uploaded;
    `spec` is changed in place."""
    places = _local_files(spec, base)
    ids: dict[tuple[Path, str], str] = {}
    uploaded: list[LocalFile] = []
    for block, old_key, new_key, local in places:
        key = (local.path, local.purpose)
        if key not in ids:
            ids[key] = upload(local).id
            uploaded.append(local)
        block.pop(old_key)
        block[new_key] = ids[key]
    return uploaded


def _local_files(spec: dict[str, Any], base: Path) -> list[tuple[dict[str, Any], str, str, LocalFile]]:
    """(the dict holding it, its key, the key its id goes under, the file) for each local file named."""
    places: list[tuple[dict[str, Any], str, str, LocalFile]] = []
    for role, purpose in _ROLES:
        block = spec.get(role)
        if not isinstance(block, dict):
            continue
        if "file" in block and "path" in block:
            raise SpecError(f"{role}: give {role}.file or {role}.path, not both")
        for name in ("file", "path"):
            if name not in block:
                continue
            if block.get("file_id") is not None:
                raise SpecError(f"{role}: give either {role}.{name} (a local file) or {role}.file_id, not both")
            path = _existing(base, block[name], f"{role}.{name}")
            places.append((block, name, "file_id", LocalFile(f"{role}.{name}", purpose, path)))
        value = block.get("file_id")
        if isinstance(value, str) and _is_local_file(base, value):
            places.append((block, "file_id", "file_id", LocalFile(f"{role}.file_id", purpose, _resolve(base, value))))

    dataset = spec.get("dataset")
    if isinstance(dataset, dict):
        for split in ("train", "validation"):
            value = dataset.get(split)
            if not isinstance(value, str) or value.startswith("builtin:"):
                continue
            if _is_local_file(base, value):
                local = LocalFile(f"dataset.{split}", "dataset", _resolve(base, value))
                places.append((dataset, split, split, local))
            elif _looks_like_path(value):
                _existing(base, value, f"dataset.{split}")  # raises, naming the resolved path
    return places


def _resolve(base: Path, value: str) -> Path:
    return (base / Path(value).expanduser()).resolve()


def _is_local_file(base: Path, value: str) -> bool:
    return bool(value) and _resolve(base, value).is_file()


def _looks_like_path(value: str) -> bool:
    """Not an id: ids are `file_` and hex; a path has a folder separator or a file extension."""
    return not value.startswith("file_") and ("/" in value or "\\" in value or "." in Path(value).name)


def _existing(base: Path, value: Any, field: str) -> Path:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{field} must be the path of a local file, got {value!r}")
    path = _resolve(base, value)
    if not path.is_file():
        raise SpecError(f"{field}: no such file: {path} (relative paths are resolved against the spec's folder)")
    return path
