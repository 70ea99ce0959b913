"""The events a run emits: one JSON object per line on stdout (the worker's only view into a run).

Types: progress, metrics, checkpoint, message, error, result. `Emitter` is the callback the engine is
given; `JsonLinesEmitter` writes lines, `ListEmitter` collects them for tests and the Python API.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol, TextIO


class Emitter(Protocol):
    def __call__(self, type: str, **fields: Any) -> None: ...


class JsonLinesEmitter:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, type: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"type": type, **fields}, default=float) + "\n")
        self.stream.flush()


class ListEmitter:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, type: str, **fields: Any) -> None:
        self.events.append({"type": type, **fields})

    def of_type(self, type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type]


def null_emitter(type: str, **fields: Any) -> None:
    """Discard events (e.g. the baseline run reports through its parent)."""
