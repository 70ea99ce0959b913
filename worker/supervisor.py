"""Run one claimed job: write job.json, start the engine, persist what it says, and set the final status.

The loop, about ten times a second: take the child's stdout lines (a reader thread queues them), and when
due, flush — one transaction that writes the buffered events/metrics/progress, renews the lease every
`heartbeat_seconds` and reads the cancel flag. Flushes happen at most every `flush_interval_seconds`, so a
run that prints a thousand steps a second still costs the database about two small transactions a second.

How a run ends (exit code of `python -m distill run`, distill/errors.py):
- 0 with a result event        -> succeeded (artifacts recorded, final metrics from the report);
- 2                            -> failed with the error event's code/message/param (the user's mistake);
- cancel requested, we stopped it -> cancelled (exit 3 after a checkpoint, or killed after the grace);
- the worker is shutting down  -> the job goes back to the queue and resumes from its checkpoint later;
- killed by a signal (SIGKILL from the kernel's OOM killer, SIGSEGV, ...) with attempts left -> back to the
  queue with the attempt counted, re-sent by the reconciler, and the next attempt resumes from the
  checkpoint; SIGXCPU (its CPU-time limit) -> failed `cpu_time_exceeded`;
- the job's time budget (the tenant's, fixed when it was accepted) ran out, counted from the first attempt's
  start -> stopped like a cancel, then failed `time_budget_exceeded`;
- 1, a signal on the last attempt, anything else -> failed `internal_error` with a generic message; the
  traceback (stderr tail) goes to the events and the worker log, the whole stderr stays in the job folder.

The database may be unreachable at any point: syncs keep what they could not write (RunLog.restore) and
the final write retries for up to `db_retry_seconds`, so an outage loses no event or metric.
- the lease was lost           -> nothing is written: the worker that took the job over owns it now.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from queue import Empty
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from app.db import SessionFactory
from app.models import utcnow
from app.probe import service_folders
from distill.config import JobConfig
from distill.errors import EXIT_OK, EXIT_USER_ERROR, UserError
from worker import repository as repo
from worker.child import Child, Sandbox, tail
from worker.jobfile import resolve_spec, write_job_file
from worker.metrics import TrainingCounter
from worker.mlflow_tracking import MlflowTracking
from worker.outcome import collect_artifacts, final_metrics
from worker.repository import ClaimedJob
from worker.run_log import RunLog
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

ENGINE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "distill")
CRASH_MESSAGE = "the training process crashed; see the job events"
_SHUTDOWN = threading.Event()
T = TypeVar("T")


def request_shutdown() -> None:
    """The worker is stopping: running jobs checkpoint and go back to the queue (safe in a signal handler)."""
    _SHUTDOWN.set()


def shutdown_requested() -> bool:
    return _SHUTDOWN.is_set()


def reset_shutdown() -> None:
    """Forget a shutdown request (tests run several supervisors in one process)."""
    _SHUTDOWN.clear()


def job_dir(settings: WorkerSettings, job_id: str) -> Path:
    return settings.artifact_dir / "jobs" / job_id


def job_inputs(config: JobConfig) -> tuple[Path, ...]:
    """The uploads the run may read: its teacher, student and data files (built-in data needs none)."""
    paths = [
        config.teacher.path if config.teacher is not None else None,
        config.student.path,
        config.dataset.train,
        config.dataset.validation,
    ]
    return tuple(Path(p) for p in paths if isinstance(p, str) and not p.startswith("builtin:"))


def sandbox_for(settings: WorkerSettings, *, work: Path, config: JobConfig) -> Sandbox:
    gpu = settings.device != "cpu" and any(Path("/dev").glob("nvidia[0-9]*"))
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    return Sandbox(
        mode=settings.probe_sandbox,
        work=work.resolve(),
        inputs=job_inputs(config),
        hidden=tuple(service_folders(settings)),
        cpu_seconds=settings.train_cpu_seconds or None,
        memory_bytes=None if gpu or not settings.train_memory_mb else settings.train_memory_mb * 2**20,
        gpu=gpu,
        extra_env={"HOME": str(work.resolve()), "TMPDIR": str(tmp.resolve())},
    )


class Supervisor:
    def __init__(
        self,
        job: ClaimedJob,
        *,
        settings: WorkerSettings,
        sessions: SessionFactory,
        engine_command: Sequence[str] = ENGINE_COMMAND,
    ) -> None:
        self.job = job
        self.settings = settings
        self.sessions = sessions
        self.engine_command = list(engine_command)
        self.dir = job_dir(settings, job.id)
        self.run_log = RunLog(metrics=job.metrics)
        self.stop_reason: str | None = None  # "cancel" | "shutdown" | "lease_lost" | "time_budget"
        self._budget_ends = self._budget_deadline(job)
        self._last_flush = self._last_poll = self._last_heartbeat = time.monotonic()
        self._sync_failures = 0  # syncs failed in a row (the database is unreachable)
        self._retry_at = 0.0  # no sync before this (monotonic) while they fail

    # --- the run -----------------------------------------------------------------------------------------

    def run(self) -> str:
        """Supervise the job to its end; returns the final status (or 'queued' / 'lost')."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.job.cancel_requested:
            return self._finish("cancelled", message="the job was cancelled before it started")
        try:
            with self.sessions() as session:
                config = resolve_spec(session, spec=self.job.spec, tenant_id=self.job.tenant_id, settings=self.settings)
            job_file = self.dir / "job.json"
            write_job_file(config, job_file)
            confine = sandbox_for(self.settings, work=self.dir, config=config)
        except UserError as exc:
            return self._finish("failed", error=exc.as_dict(), message=exc.message)
        resume = (self.dir / "checkpoint.pt").is_file()
        command = [*self.engine_command, "run", str(job_file.resolve()), "--out", str(self.dir.resolve())]
        command += ["--device", self.settings.device] + (["--resume"] if resume else [])
        tracking = MlflowTracking.start(self.job, settings=self.settings, sessions=self.sessions)
        observers = (tracking.observe, TrainingCounter(self.job.spec, resumed=resume).observe)
        with open(self.dir / "stdout.log", "a", encoding="utf-8") as stdout_log:
            self.run_log = RunLog(metrics=self.job.metrics, stdout_log=stdout_log, observers=observers)
            how = ", resuming from its checkpoint" if resume else ""
            self.run_log.add(
                "started",
                f"attempt {self.job.attempt} started on {self.job.worker_id}{how}",
                data={"attempt": self.job.attempt, "worker_id": self.job.worker_id, "resumed": resume},
            )
            child = Child(command, stderr_path=self.dir / "stderr.log", confine=confine)
            try:
                exit_code = self._supervise(child)
            except BaseException:
                tracking.close()
                raise
            finally:
                if child.poll() is None:  # an exception (e.g. the worker's cold shutdown) must not orphan it
                    child.kill()
                    child.wait()
        return tracking.end(self._conclude(exit_code), job_dir=self.dir)

    def _supervise(self, child: Child) -> int:
        eof = False
        while True:
            try:
                line = child.lines.get(timeout=0.1) if not eof else None
                if line is None:
                    eof = True
                else:
                    self.run_log.feed(line)
                    while len(self.run_log.events) + len(self.run_log.metric_rows) < 1000:
                        more = child.lines.get_nowait()
                        if more is None:
                            eof = True
                            break
                        self.run_log.feed(more)
            except Empty:
                pass
            self._tick(child)
            if self.stop_reason == "lease_lost":
                child.kill()
                return child.wait()
            if eof and child.poll() is not None:
                return child.wait()
            if eof:
                time.sleep(0.05)

    @staticmethod
    def _budget_deadline(job: ClaimedJob) -> float | None:
        """The monotonic time the job's time budget runs out (earlier attempts' time counted), or None."""
        if not job.time_budget_seconds:
            return None
        spent = (utcnow() - job.started_at).total_seconds() if job.started_at is not None else 0.0
        return time.monotonic() + job.time_budget_seconds - max(spent, 0.0)

    def _tick(self, child: Child) -> None:
        now = time.monotonic()
        if _SHUTDOWN.is_set() and self.stop_reason is None:
            self._stop(child, "shutdown", "the worker is shutting down: stopping the run at a checkpoint")
        if self._budget_ends is not None and now >= self._budget_ends and self.stop_reason is None:
            budget = self.job.time_budget_seconds
            self._stop(child, "time_budget", f"the job's time budget of {budget} s ran out: stopping the run")
        heartbeat = now - self._last_heartbeat >= self.settings.heartbeat_seconds
        flush = self.run_log.pending and now - self._last_flush >= self.settings.flush_interval_seconds
        poll = now - self._last_poll >= self.settings.cancel_poll_seconds
        if (heartbeat or flush or poll) and now >= self._retry_at:
            self._sync(child, renew=heartbeat)
        if child.terminating:
            child.kill_if_overdue(self.settings.cancel_grace_seconds)

    def _sync(self, child: Child, *, renew: bool) -> None:
        progress, metrics, events, metric_rows = self.run_log.take()
        now = utcnow()
        lease_until = now + timedelta(seconds=self.settings.lease_seconds) if renew else None
        try:
            with self.sessions() as session:
                result = repo.sync_running_job(
                    session,
                    self.job,
                    now=now,
                    progress=progress,
                    metrics=metrics,
                    lease_until=lease_until,
                    events=events,
                    metric_rows=metric_rows,
                )
        except SQLAlchemyError:
            # The database is unreachable: keep training and retry, backing off (0.5 s doubling to 5 s,
            # not every tick); if it stays down past the lease, the next successful sync finds the job
            # taken over and stops.
            self._sync_failures += 1
            delay = min(0.5 * 2 ** (self._sync_failures - 1), 5.0)
            if self._sync_failures == 1:
                log.exception("job %s: could not write progress (will retry)", self.job.id)
            else:
                log.warning("job %s: could not write progress (will retry in %.1fs)", self.job.id, delay)
            self.run_log.restore(events, metric_rows)
            self._last_flush = time.monotonic()
            self._retry_at = self._last_flush + delay
            return
        self._sync_failures = 0
        mono = time.monotonic()
        self._last_flush = self._last_poll = mono
        if renew:
            self._last_heartbeat = mono
        if not result.owned:
            log.warning("job %s: lease of attempt %s lost to another worker: stopping", self.job.id, self.job.attempt)
            self.stop_reason = "lease_lost"
        elif result.cancel_requested and self.stop_reason in (None, "shutdown"):
            self._stop(child, "cancel", "cancel requested: stopping the training process")

    def _stop(self, child: Child, reason: str, message: str) -> None:
        self.stop_reason = reason
        self.run_log.add("stopping", message, data={"reason": reason})
        child.terminate()

    # --- the end -----------------------------------------------------------------------------------------

    def _conclude(self, exit_code: int) -> str:
        run_log = self.run_log
        if self.stop_reason == "lease_lost":
            return "lost"
        if exit_code == EXIT_OK and run_log.result is not None:
            return self._succeed(run_log.result)
        if self.stop_reason == "cancel":
            return self._finish("cancelled", message="the job was cancelled", data={"exit_code": exit_code})
        if self.stop_reason == "shutdown":
            return self._requeue(exit_code)
        if self.stop_reason == "time_budget":
            message = (
                f"the job ran past its time budget of {self.job.time_budget_seconds} s and was stopped; "
                "ask for fewer epochs or a smaller job, or for a larger budget"
            )
            error = {"code": "time_budget_exceeded", "message": message, "param": None}
            return self._finish("failed", error=error, message=message, data={"exit_code": exit_code})
        if exit_code == EXIT_USER_ERROR and run_log.error is not None:
            return self._finish("failed", error=run_log.error, message=run_log.error["message"])
        if exit_code == -signal.SIGXCPU:
            message = f"the run used its {self.settings.train_cpu_seconds} s of CPU time and was stopped"
            error = {"code": "cpu_time_exceeded", "message": message, "param": None}
            return self._finish("failed", error=error, message=message)
        if exit_code < 0 and self.job.attempt < self.settings.max_attempts:
            return self._retry(exit_code)
        return self._crash(exit_code)

    def _backfill_metrics(self) -> None:
        """Store the metric rows an earlier attempt's engine reported but its worker never wrote (a worker
        killed between the engine's checkpoint and its next flush: the resumed attempt starts after that
        epoch and never reports it again). The engine's metrics.jsonl holds the whole history. Best effort."""
        path = self.dir / "metrics.jsonl"
        if not path.is_file():
            return
        try:
            with self.sessions() as session:
                known = repo.metric_keys(session, job_id=self.job.id)
        except SQLAlchemyError:
            log.warning("job %s: could not read its stored metrics to backfill them", self.job.id)
            return
        known |= {(m.name, m.step, m.epoch) for m in self.run_log.metric_rows}
        added = self.run_log.backfill(path, known=known)
        if added:
            log.warning("job %s: stored %s metric rows of an earlier attempt from metrics.jsonl", self.job.id, added)

    def _succeed(self, result: dict[str, Any]) -> str:
        self._backfill_metrics()
        report = result.get("report") if isinstance(result.get("report"), dict) else {}
        artifacts = collect_artifacts(result, job_dir=self.dir, artifact_root=self.settings.artifact_dir)
        metrics = {**self.run_log.metrics, **final_metrics(report or {})}
        progress = {**self.run_log.progress, "fraction": 1.0, "eta_seconds": 0}
        names = ", ".join(a.name for a in artifacts)
        return self._finish(
            "succeeded",
            message=f"the job succeeded; artifacts: {names}",
            progress=progress,
            metrics=metrics,
            artifacts=artifacts,
        )

    def _crash(self, exit_code: int) -> str:
        stderr_tail = tail(self.dir / "stderr.log")
        if exit_code == EXIT_OK:
            reason = "the training process exited without a result"
        elif exit_code < 0:
            reason = f"the training process was killed by signal {-exit_code}"
        else:
            reason = f"the training process exited with code {exit_code}"
        log.error("job %s attempt %s: %s; stderr tail:\n%s", self.job.id, self.job.attempt, reason, stderr_tail)
        error = {"code": "internal_error", "message": CRASH_MESSAGE, "param": None}
        data = {"exit_code": exit_code, "reason": reason, "stderr_tail": stderr_tail}
        if self.run_log.error is not None:
            data["engine_error"] = self.run_log.error
        self.run_log.add("crash", reason, level="error", data=data)
        return self._finish("failed", error=error, message=CRASH_MESSAGE)

    def _finish(
        self,
        status: str,
        *,
        message: str,
        error: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> str:
        level = {"succeeded": "info", "cancelled": "info"}.get(status, "error")
        self.run_log.add(status, message, level=level, data={**(data or {}), **({"error": error} if error else {})})
        progress, metrics, events, metric_rows = self.run_log.take()
        progress, metrics = fields.pop("progress", progress), fields.pop("metrics", metrics)

        def write() -> bool:
            with self.sessions() as session:
                return repo.finish_job(
                    session,
                    self.job,
                    now=utcnow(),
                    status=status,
                    error=error,
                    events=events,
                    metric_rows=metric_rows,
                    progress=progress,
                    metrics=metrics,
                    **fields,
                )

        owned = self._until_written(write)
        if not owned:
            log.warning("job %s: lease lost before the final status %s could be written", self.job.id, status)
            return "lost"
        log.info("job %s attempt %s: %s", self.job.id, self.job.attempt, status)
        return status

    def _retry(self, exit_code: int) -> str:
        """The child died of a signal (an OOM kill, most often) with attempts left: queue the next attempt."""
        reason = f"the training process was killed by signal {-exit_code} ({signal.Signals(-exit_code).name})"
        log.warning("job %s attempt %s: %s; retrying from its checkpoint", self.job.id, self.job.attempt, reason)
        data = {"exit_code": exit_code, "reason": reason, "stderr_tail": tail(self.dir / "stderr.log", 2000)}
        self.run_log.add("crash", reason, level="warning", data=data)
        message = (
            f"{reason}; attempt {self.job.attempt + 1} of {self.settings.max_attempts} will resume from "
            "the last checkpoint"
        )
        return self._requeue(exit_code, message=message, count_attempt=True)

    def _requeue(
        self,
        exit_code: int,
        *,
        message: str = "the worker stopped; the job will resume from its last checkpoint",
        count_attempt: bool = False,
    ) -> str:
        self.run_log.add("requeued", message, data={"exit_code": exit_code})
        progress, metrics, events, metric_rows = self.run_log.take()

        def write() -> bool:
            # What the run wrote before it stopped and the hand-back, in one transaction each, in order.
            with self.sessions() as session:
                synced = repo.sync_running_job(
                    session, self.job, now=utcnow(), progress=progress, metrics=metrics, metric_rows=metric_rows
                )
            if not synced.owned:
                return False
            with self.sessions() as session:
                return repo.requeue_job(session, self.job, now=utcnow(), events=events, count_attempt=count_attempt)

        return "queued" if self._until_written(write) else "lost"

    def _until_written(self, write: Callable[[], T]) -> T:
        """`write()`, retried while the database is unreachable, for up to `db_retry_seconds`.

        Metric rows go in the same transaction as the lease check, so a retry after a failed attempt
        writes them once; a retry after a commit whose reply was lost may repeat the last batch (rare).
        """
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = 0.5
        while True:
            try:
                return write()
            except SQLAlchemyError:
                if time.monotonic() > deadline:
                    raise
                log.warning("job %s: the database is unreachable; retrying in %.1fs", self.job.id, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def supervise(
    job: ClaimedJob,
    *,
    settings: WorkerSettings,
    sessions: SessionFactory,
    engine_command: Sequence[str] = ENGINE_COMMAND,
) -> str:
    return Supervisor(job, settings=settings, sessions=sessions, engine_command=engine_command).run()
