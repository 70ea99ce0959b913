"""A human progress bar on stderr, fed by the same events the worker reads from stdout."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from distill.events import Emitter


class ProgressBar:
    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None
        self._phase: str | None = None
        self._val: dict[str, str] = {}  # latest validation metrics, shown beside the epoch

    @classmethod
    def maybe(cls, choice: str) -> ProgressBar | None:
        if choice == "bar" or (choice == "auto" and sys.stderr.isatty()):
            return cls()
        return None

    def wrap(self, emit: Emitter) -> Emitter:
        def emit_and_show(type: str, **fields: Any) -> None:
            emit(type, **fields)
            self.show(type, fields)

        return emit_and_show

    def show(self, type: str, fields: dict[str, Any]) -> None:
        if type == "progress":
            if self._bar is None or fields.get("phase") != self._phase:
                self.close()
                self._val = {}
                self._phase = fields.get("phase")
                self._bar = tqdm(total=fields["steps"], desc=self._phase, unit="step", file=sys.stderr)
            self._bar.n = fields["step"]
            self._bar.set_postfix(epoch=f"{fields['epoch']}/{fields['epochs']}", **self._val, refresh=False)
            self._bar.refresh()
        elif type == "metrics":
            values = fields["values"].items()
            self._val = {k.rsplit("/", 1)[-1]: f"{v:.4f}" for k, v in values if "val/" in k and "kl" not in k}
        elif type in ("message", "error"):
            tqdm.write(f"[{type}] {fields.get('message')}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
