"""The one settings object of the service and the worker (env prefix `DISTILLERY_`).

Defaults describe the embedded mode of DESIGN §4: a SQLite file, a broker that needs no Redis and local
folders under ./var, so `make run` works on a machine with nothing else installed. Production sets
`DISTILLERY_DATABASE_URL=postgresql+psycopg://…` and `DISTILLERY_BROKER_URL=redis://…`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, IPvAnyNetwork, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", env_file=None, extra="ignore")

    database_url: str = "sqlite:///./var/distillery.db"
    # kombu's filesystem transport: a folder of message files, so the embedded mode needs no Redis. The
    # folders come from `broker_dir` (see `broker_transport_options`).
    broker_url: str = "filesystem://"
    broker_dir: Path = Path("./var/broker")
    artifact_dir: Path = Path("./var/artifacts")
    upload_dir: Path = Path("./var/files")
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    lease_seconds: int = Field(default=60, gt=0)
    heartbeat_seconds: int = Field(default=10, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    train_queue: str = "train"
    device: str = "auto"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    default_tenant: str = "local"
    # API keys (DESIGN §3). None: required, except in the embedded default (a SQLite database), which runs as
    # default_tenant alone and says so at start. `off` anywhere makes every request default_tenant's.
    auth: Literal["required", "off"] | None = None
    # A key's last_used_at is written at most once per this many seconds (not on every request).
    key_touch_seconds: int = Field(default=60, ge=1)
    # A verified key is trusted this long without a lookup, per API process: a revoked key stops working
    # within it (0: look every key up on every request).
    key_cache_seconds: float = Field(default=5.0, ge=0)
    # Answers of GET /v1/jobs/{id} kept per API process until Postgres says the job changed
    # (app/jobs/read_cache.py); 0 reads the database every time.
    job_read_cache_entries: int = Field(default=10_000, ge=0)
    # Per-tenant limits: every tenant's unless its row overrides one (`distillery tenants set`).
    # Jobs queued or running at once; one more is refused with 429 and Retry-After.
    max_concurrent_jobs: int = Field(default=4, ge=1)
    too_many_jobs_retry_after_seconds: int = Field(default=30, ge=1)
    # Sum of the tenant's uploaded files; an upload past it is refused with 413.
    max_storage_bytes: int = Field(default=100 * 1024**3, ge=0)
    # Wall-clock seconds a job may train (recorded on the job at submission; the worker enforces it).
    job_time_budget_seconds: int = Field(default=24 * 3600, ge=1)
    # How long /readyz and the enqueue call wait for the broker before calling it down.
    broker_timeout_seconds: float = Field(default=2.0, gt=0)
    # Worker threads of the API process (AnyIO's thread limiter, set at startup; AnyIO's default is 40).
    # Endpoints run their database work there, one thread and at most one connection per request, so the
    # pool below must have a connection for each: with fewer, threads park on the pool (and fail after
    # db_pool_timeout) while the CPU idles. Threads beyond what covers the database's latency only fight
    # for the GIL: with Postgres on the same host (docker-compose), 4 threads served as many job reads as
    # 8 and more than 20, at less than half the p99 (bench/api_throughput.py). A remote database with
    # millisecond round trips wants more.
    threadpool_size: int = Field(default=4, ge=1)
    # SQLAlchemy's pool, per process (API and worker), SQLAlchemy's defaults: db_pool_size connections kept
    # open, up to db_max_overflow more under load (a request's commit and its enqueue's UPDATE run on
    # threads of their own). Postgres' max_connections must cover (db_pool_size + db_max_overflow) x
    # processes.
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(default=30.0, gt=0)
    # The probe (app/probe.py): the sandboxed child that runs an uploaded model for the API, e.g. to list
    # its layers. Torch alone takes a few seconds and ~1 GiB of address space to start.
    probe_timeout_seconds: float = Field(default=60.0, gt=0)
    probe_cpu_seconds: int = Field(default=60, ge=1)
    probe_memory_mb: int = Field(default=4096, ge=256)
    probe_output_mb: int = Field(default=16, ge=1)
    # auto: bubblewrap where it can run, else rlimits only; bwrap: refuse to probe without it; off: rlimits.
    probe_sandbox: Literal["auto", "bwrap", "off"] = "auto"
    # Probes running at once per API process (each may use probe_memory_mb); more wait their turn.
    probe_concurrency: int = Field(default=2, ge=1)
    # Live events (SSE): how often one API process reads new events for all the jobs it streams, and how
    # often an idle stream sends a keepalive comment.
    sse_poll_seconds: float = Field(default=0.5, gt=0)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    # Hostile input (docs/RELIABILITY.md "Hostile inputs"): every value is checked against these before it
    # reaches the database, numpy or torch. A JSON body past max_json_body_bytes is refused with 413 before it
    # is parsed; one nested deeper than max_json_depth, or with NaN/Infinity, with 422 invalid_json.
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=64, ge=8)
    # Query and path parameter values (ids, cursors, names) longer than this are refused with 422.
    max_param_chars: int = Field(default=4096, ge=64)
    # A job's `metadata` labels: they are stored with the job and echoed in every listing.
    max_metadata_keys: int = Field(default=64, ge=1)
    max_metadata_key_chars: int = Field(default=128, ge=1)
    max_metadata_value_chars: int = Field(default=1024, ge=1)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=64)
    # Datasets are read from their .npy headers first: the arrays' declared (decompressed, and as float32)
    # size, the number of archive members and of dimensions are capped before numpy allocates anything.
    max_dataset_bytes: int = Field(default=1024**3, gt=0)
    max_dataset_members: int = Field(default=16, ge=2)
    max_dataset_dims: int = Field(default=8, ge=2)
    # Byte ranges in one download's Range header; more are refused with 416 (each range is a disk read).
    max_download_ranges: int = Field(default=8, ge=1)
    # Webhooks (DESIGN §3, README "Webhooks"). A delivery that fails is retried after
    # webhook_retry_first_delay_seconds, each next delay webhook_retry_factor times the previous, until
    # webhook_retry_cutoff_seconds after the event; then it is failed and its endpoint marked `failing`.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_first_delay_seconds: float = Field(default=30.0, gt=0)
    webhook_retry_factor: float = Field(default=2.0, ge=1)
    webhook_retry_cutoff_seconds: float = Field(default=3 * 24 * 3600, gt=0)
    # After a secret is rotated, deliveries are signed with the old one too for this long.
    webhook_rotation_grace_seconds: float = Field(default=24 * 3600, ge=0)
    # Redirects followed per attempt (each target checked like the URL itself).
    webhook_max_redirects: int = Field(default=3, ge=0)
    webhook_max_per_tenant: int = Field(default=20, ge=1)
    # Webhooks go to public addresses only: private, loopback, link-local (and other non-global) addresses
    # are refused after DNS resolution, at registration and on every connection, unless inside one of these
    # networks (JSON list of CIDRs, e.g. ["10.20.0.0/16"]).
    webhook_allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)

    @model_validator(mode="after")
    def _pool_covers_threads(self) -> Self:
        if self.threadpool_size > self.db_pool_size + self.db_max_overflow:
            raise ValueError(
                f"threadpool_size ({self.threadpool_size}) exceeds db_pool_size + db_max_overflow "
                f"({self.db_pool_size} + {self.db_max_overflow}): every worker thread may need a connection"
            )
        return self

    @property
    def auth_required(self) -> bool:
        if self.auth is not None:
            return self.auth == "required"
        return not self.database_url.startswith("sqlite")

    def broker_transport_options(self) -> dict[str, Any]:
        """Transport options for Celery/kombu: the message folders of the filesystem transport, else none.

        Both the API's Celery client and the worker must pass these, or they would not share a queue.
        """
        if not self.broker_url.startswith("filesystem://"):
            return {}
        folder = str(self.broker_dir / "messages")
        return {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": str(self.broker_dir / "control"),
            "processed_folder": str(self.broker_dir / "processed"),
            "store_processed": False,
        }

    def ensure_dirs(self) -> None:
        """Create the local folders the embedded mode writes to (idempotent)."""
        for folder in (self.upload_dir, self.artifact_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for key, value in self.broker_transport_options().items():
            if key.endswith("folder") or key.startswith("data_folder"):
                Path(value).mkdir(parents=True, exist_ok=True)
        if self.database_url.startswith("sqlite:///") and not self.database_url.endswith(":memory:"):
            Path(self.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def upload_path(self, storage_path: str) -> Path:
        """Where an uploaded file's `storage_path` lives on disk (relative paths are under upload_dir).

        Absolute, because the probe and the training child run in folders of their own."""
        return _resolved(self.upload_dir) / storage_path

    def artifact_path(self, storage_path: str) -> Path:
        """Where an artifact's `storage_path` lives on disk (relative paths are under artifact_dir)."""
        return self.artifact_dir / storage_path


@lru_cache(maxsize=64)
def _resolved(folder: Path) -> Path:
    # Once per folder: resolving every path (system calls for each part) showed in a burst of submissions.
    # Our storage paths are names we made, with no links or '..' to resolve.
    return folder.resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
