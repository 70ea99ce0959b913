"""Knobs only the worker reads, on top of the shared `app.settings.Settings` (same `DISTILLERY_` env prefix).

They live here rather than in the app's settings because the API never needs them; a subclass keeps one
source of configuration (environment variables) and one spelling of every shared field.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from app.settings import Settings


class WorkerSettings(Settings):
    # Redis re-delivers an unacknowledged message after this long. It must exceed the longest job, or a
    # second worker would receive the message of a job that is still running (harmless, the claim is a
    # no-op, but wasteful). Dead workers are detected by the job lease, not by this timeout.
    visibility_timeout_seconds: int = Field(default=12 * 3600, gt=0)
    # The reconciler's period, and how long a queued job may wait after its message was sent before the
    # message is assumed lost (e.g. Redis restarted without persistence) and sent again.
    reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    redispatch_after_seconds: float = Field(default=15 * 60.0, gt=0)
    # After SIGTERM the engine writes a checkpoint and exits; past this grace period it is killed.
    cancel_grace_seconds: float = Field(default=30.0, gt=0)
    # The supervisor writes buffered events at most this often, and reads the cancel flag this often.
    flush_interval_seconds: float = Field(default=0.5, gt=0)
    cancel_poll_seconds: float = Field(default=1.0, gt=0)
    # How often the filesystem transport (embedded mode) looks for new message files.
    broker_polling_interval: float = Field(default=0.2, gt=0)
    # The engine's command line before `run JOB.json …` (JSON list in the environment), e.g. to wrap it in
    # `nice` or `taskset`; empty means this interpreter's `python -m distill`.
    engine_command: list[str] = Field(default_factory=list)


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
