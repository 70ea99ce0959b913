"""Cooperative stop: SIGTERM sets a flag that the training loop checks after every step."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopFlag:
    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def install_sigterm(self) -> None:
        """Turn SIGTERM (and SIGINT) into a stop request instead of an immediate exit."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
