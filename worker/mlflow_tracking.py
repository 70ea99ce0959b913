"""MLflow tracking (DISTILLERY_MLFLOW_TRACKING_URI): each job is one MLflow run, on a best-effort basis.

What goes where:
- the run: created by the job's first attempt in the experiment `mlflow_experiment`, named after the job and
  tagged `distillery.job_id`; its id goes to jobs.mlflow_run_id at once, so an attempt that resumes the job
  (after a worker shutdown or a crash) continues the same run instead of starting another;
- params: the job's spec, flattened (`training.epochs`, `knowledge.terms.0.type`);
- metrics: the engine's per-epoch metrics as they arrive (MLflow step = epoch), and at success the
  report's results (`student/top1`, ...);
- artifacts, at success: report.json, report.html and config.json at the run's root, the exported student
  under `student/` (an online teacher under `teacher/`);
- the model registry, at success: a version of `mlflow_model_name` from `runs:/<run id>/student`, tagged
  with `job_id`;
- the run ends FINISHED, FAILED or KILLED with the job; a job given back to the queue leaves it RUNNING.

MLflow never fails or holds up a job. Every call runs on one background thread per attempt, in order,
inside a guard that turns any error into a warning. HTTP calls time out after `mlflow_timeout_seconds`
(MLFLOW_HTTP_REQUEST_TIMEOUT) with one retry (MLFLOW_HTTP_REQUEST_MAX_RETRIES, unless set). After a failed
call, metric batches wait RETRY_AFTER_SECONDS (at most MAX_PENDING_METRICS of them are kept) rather than
each waiting out a timeout. The end of the attempt waits for the thread at most `mlflow_finish_seconds`;
what is left then goes on in the background.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from app.db import SessionFactory
from app.models import utcnow
from worker import repository as repo
from worker.outcome import final_metrics
from worker.repository import ClaimedJob
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30.0
MAX_PENDING_METRICS = 10_000
MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
ROOT_ARTIFACTS = ("report.json", "report.html", "config.json")
EXPORTS = (".safetensors", ".onnx", ".pt")
# MLflow's limits: params per request, metrics per request, a param value's and a key's length.
MAX_PARAMS_PER_CALL = 100
MAX_METRICS_PER_CALL = 1000
MAX_PARAM_CHARS = 6000
MAX_KEY_CHARS = 250
_UNSAFE_NAME = re.compile(r"[^\w\-. /:]")

Call = tuple[str, Callable[[], None]]  # (what it does, for the warning; the call)


def spec_params(spec: Any, prefix: str = "") -> dict[str, str]:
    """The spec as MLflow params: {"training": {"epochs": 3}} -> {"training.epochs": "3"}; lists by index."""
    if isinstance(spec, dict) and spec:
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in spec.items()]
    elif isinstance(spec, list) and spec:
        items = [(str(i), v) for i, v in enumerate(spec)]
    else:
        value = spec if isinstance(spec, str) else json.dumps(spec)
        return {_mlflow_name(prefix or "spec"): value[:MAX_PARAM_CHARS]}
    out: dict[str, str] = {}
    for key, value in items:
        out.update(spec_params(value, f"{prefix}.{key}" if prefix else key))
    return out


def _mlflow_name(name: str) -> str:
    """A metric or param key MLflow accepts (user metadata keys may hold any character)."""
    return _UNSAFE_NAME.sub("_", name)[:MAX_KEY_CHARS]


class MlflowTracking:
    """The MLflow side of one attempt of one job. Its methods are no-ops when no tracking URI is set."""

    def __init__(self, job: ClaimedJob, *, settings: WorkerSettings, sessions: SessionFactory) -> None:
        self.job = job
        self.settings = settings
        self.sessions = sessions
        self.enabled = bool(settings.mlflow_tracking_uri)
        self.run_id: str | None = None
        self._client: Any = None
        self._calls: queue.Queue[Call | None] = queue.Queue()
        self._metrics: list[tuple[str, float, int, int]] = []  # (name, value, timestamp ms, step)
        self._lock = threading.Lock()
        self._started = False  # the start call has run (successfully or not)
        self._quiet_until = 0.0
        self._failures = 0
        self._thread = threading.Thread(target=self._loop, name=f"mlflow-{job.id}", daemon=True)

    @classmethod
    def start(cls, job: ClaimedJob, *, settings: WorkerSettings, sessions: SessionFactory) -> MlflowTracking:
        """Start (or, for a resumed job, continue) the job's run, in the background."""
        tracking = cls(job, settings=settings, sessions=sessions)
        if tracking.enabled:
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow_timeout_seconds)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a worker does not report usage
            tracking._calls.put(("start the run", tracking._start_run))
            tracking._thread.start()
        return tracking

    def observe(self, event: dict[str, Any]) -> None:
        """An engine event (worker/run_log.py); metrics events are queued for the run. Never blocks."""
        if not self.enabled or event.get("type") != "metrics" or not isinstance(event.get("values"), dict):
            return
        epoch, step = event.get("epoch"), event.get("step")
        mlflow_step = epoch if isinstance(epoch, int) else step if isinstance(step, int) else 0
        now_ms = int(time.time() * 1000)
        rows = [
            (_mlflow_name(str(name)), float(value), now_ms, mlflow_step)
            for name, value in event["values"].items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ]
        with self._lock:
            self._metrics.extend(rows)
            del self._metrics[:-MAX_PENDING_METRICS]
        self._calls.put(("log metrics", self._flush_metrics))

    def end(self, status: str, *, job_dir: Path) -> str:
        """The attempt ended with the job in `status`: close the run accordingly; returns `status`."""
        if not self.enabled:
            return status
        if status == "succeeded":
            self._calls.put(("record the outcome", lambda: self._record_outcome(job_dir)))
        if status in MLFLOW_STATUS:
            self._calls.put(("end the run", lambda: self._client_().set_terminated(self.run_id, MLFLOW_STATUS[status])))
        self.close()
        self._thread.join(self.settings.mlflow_finish_seconds)
        if self._thread.is_alive():
            log.warning("job %s: MLflow is slow; its last calls go on in the background", self.job.id)
        return status

    def close(self) -> None:
        """Stop the thread once it has sent what it holds, leaving the run RUNNING (the attempt was cut
        short; the next one continues the run). Does not wait."""
        if self.enabled:
            self._calls.put(None)

    # --- the background thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                self._guard("log metrics", lambda: self._flush_metrics(force=True))
                return
            if call[1] == self._flush_metrics:
                self._guard(*call)
            elif self.run_id is not None or not self._started:
                self._guard("log metrics", lambda: self._flush_metrics(force=True))  # metrics first, in order
                self._guard(*call)

    def _guard(self, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # an outage, a timeout, MLflow missing: the job goes on without it
            self._failures += 1
            self._quiet_until = time.monotonic() + RETRY_AFTER_SECONDS
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            log.warning("job %s: MLflow could not %s (%s); the job goes on", self.job.id, what, reason)

    def _client_(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient  # here: a worker without MLflow configured never imports it

            self._client = MlflowClient(tracking_uri=self.settings.mlflow_tracking_uri)
        return self._client

    def _start_run(self) -> None:
        try:
            with self.sessions() as session:
                stored = repo.mlflow_run_id(session, job_id=self.job.id)
            client = self._client_()
            self.run_id = self._resume(client, stored) if stored else None
            if self.run_id is None:
                self.run_id = self._create_run(client)
        finally:
            self._started = True
        client.set_tag(self.run_id, "distillery.attempt", str(self.job.attempt))
        params = list(spec_params(self.job.spec).items())
        from mlflow.entities import Param

        # The same params on every attempt: MLflow accepts a param logged again with its value.
        for i in range(0, len(params), MAX_PARAMS_PER_CALL):
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in params[i : i + MAX_PARAMS_PER_CALL]])

    def _resume(self, client: Any, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # an outage: this attempt goes untracked, the next one tries this run again
            log.warning("job %s: its MLflow run %s is gone; starting a new one", self.job.id, run_id)
            return None
        if run.info.lifecycle_stage != "active":
            return None
        client.update_run(run_id, status="RUNNING")
        log.info("job %s: continuing MLflow run %s", self.job.id, run_id)
        return run_id

    def _create_run(self, client: Any) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.mlflow_experiment
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name)
            except MlflowException as exc:  # another worker created it first
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        tags = {"distillery.job_id": self.job.id, "distillery.tenant": self.job.tenant_id}
        run_id: str = client.create_run(experiment_id, run_name=self.job.id, tags=tags).info.run_id
        try:
            with self.sessions() as session:
                repo.set_mlflow_run_id(session, self.job, run_id=run_id, now=utcnow())
        except Exception:  # the database is down: tracked all the same, but a resumed job starts a new run
            log.warning("job %s: could not record its MLflow run %s", self.job.id, run_id, exc_info=True)
        return run_id

    def _flush_metrics(self, *, force: bool = False) -> None:
        if not self._started or (not force and time.monotonic() < self._quiet_until):
            return
        with self._lock:
            rows, self._metrics = self._metrics, []
        if self.run_id is None or not rows:
            return  # no run (its start failed): the metrics are dropped
        from mlflow.entities import Metric

        for i in range(0, len(rows), MAX_METRICS_PER_CALL):
            try:
                batch = rows[i : i + MAX_METRICS_PER_CALL]
                self._client_().log_batch(self.run_id, metrics=[Metric(*row) for row in batch])
            except Exception:
                with self._lock:  # keep what was not sent for the next try, within the cap
                    self._metrics[:0] = rows[i:]
                    del self._metrics[:-MAX_PENDING_METRICS]
                raise

    def _record_outcome(self, job_dir: Path) -> None:
        """The results, the report and the exports, and the student's model version; each step guarded, and
        the rest skipped once one fails (the server is down: each would wait out its timeout)."""
        client, run_id = self._client_(), self.run_id
        steps: list[Call] = []
        report = job_dir / "report.json"
        if report.is_file():
            steps.append(("log the results", lambda: self._log_results(json.loads(report.read_text()))))
        uploads: list[tuple[Path, str | None]] = [(job_dir / name, None) for name in ROOT_ARTIFACTS]
        uploads += [(job_dir / f"{group}{suffix}", group) for group in ("student", "teacher") for suffix in EXPORTS]
        for path, folder in uploads:
            if path.is_file():
                steps.append((f"upload {path.name}", partial(client.log_artifact, run_id, str(path), folder)))
        if any((job_dir / f"student{suffix}").is_file() for suffix in EXPORTS):
            steps.append(("register the student", partial(self._register, client)))
        for what, step in steps:
            failures = self._failures
            self._guard(what, step)
            if self._failures > failures:
                break

    def _log_results(self, report: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = [Metric(_mlflow_name(k), float(v), now_ms, 0) for k, v in final_metrics(report).items()]
        if metrics:
            self._client_().log_batch(self.run_id, metrics=metrics[:MAX_METRICS_PER_CALL])

    def _register(self, client: Any) -> None:
        from mlflow.exceptions import MlflowException

        name = self.settings.mlflow_model_name
        try:
            client.create_registered_model(name, description="Students trained by Distillery.")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = {"job_id": self.job.id, "tenant": self.job.tenant_id}
        version = client.create_model_version(
            name, source=f"runs:/{self.run_id}/student", run_id=self.run_id, tags=tags, await_creation_for=0
        )
        client.set_tag(self.run_id, "distillery.model_version", f"{name}/{version.version}")
