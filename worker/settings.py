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
    # A queued job is re-sent when it is older than the interval and its last message was sent longer ago
    # than `redispatch_after_seconds` (default: the interval itself), so a job whose message vanished runs
    # within about two intervals. A job still waiting behind others gets a duplicate message now and then,
    # which its claim turns into a no-op.
    reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    redispatch_after_seconds: float | None = Field(default=None, gt=0)
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
    # The training child's sandbox (app/sandbox.py; bubblewrap per `probe_sandbox`): its address space, and
    # its CPU seconds per attempt (all threads together; 0: no limit). The memory limit is not applied on a
    # GPU, whose driver maps far more address space than it uses.
    train_memory_mb: int = Field(default=32 * 1024, ge=0)
    train_cpu_seconds: int = Field(default=0, ge=0)
    # How long the end of a run (its final status, or handing it back) keeps retrying while the database
    # is unreachable, holding what the run wrote in memory meanwhile.
    db_retry_seconds: float = Field(default=600.0, gt=0)
    # MLflow (worker/mlflow_tracking.py): unset, nothing is tracked. Set, each job is a run in the experiment,
    # and each successful student a version of the registered model (tagged with the job id). MLflow is best
    # effort: its HTTP calls time out after mlflow_timeout_seconds with one retry, and the end of a run
    # waits at most mlflow_finish_seconds for them before the worker takes its next job.
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "distillery"
    mlflow_model_name: str = "distillery-student"
    mlflow_timeout_seconds: int = Field(default=5, ge=1)
    mlflow_finish_seconds: float = Field(default=30.0, gt=0)
    # Prometheus metrics of this worker process (worker/metrics.py) on this port; unset: not served.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "0.0.0.0"
    # The webhook dispatcher (worker/webhooks.py, a thread of every worker): how often it looks for due
    # deliveries, and how many it sends at once (each on a thread of its own, for slow receivers).
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_concurrency: int = Field(default=4, ge=1)

    @property
    def redispatch_seconds(self) -> float:
        return self.redispatch_after_seconds or self.reconcile_interval_seconds


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
