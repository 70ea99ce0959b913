"""The Celery application of the worker, configured from the settings (start it with `celery -A worker.celery_app`).

Postgres (or SQLite) holds the truth about every job; the broker only rings the bell. Hence: results are
ignored, messages are acknowledged after the task returns (a worker that dies mid-task leaves the message
to be re-delivered, and the job's lease decides who may run it), and each worker takes one message at a
time because one training job occupies the whole device.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from worker.settings import WorkerSettings, get_worker_settings

log = logging.getLogger(__name__)

RUN_JOB_TASK = "distillery.run_job"


def make_celery(settings: WorkerSettings) -> Celery:
    settings.ensure_dirs()
    app = Celery("distillery", broker=settings.broker_url, include=["worker.tasks"])
    transport_options: dict[str, Any] = dict(settings.broker_transport_options())
    if settings.broker_url.startswith(("redis://", "rediss://")):
        transport_options["visibility_timeout"] = settings.visibility_timeout_seconds
    embedded = settings.broker_url.startswith("filesystem://")
    if embedded:
        transport_options["polling_interval"] = settings.broker_polling_interval
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        # A message whose worker was lost is re-delivered (the claim turns a duplicate into a no-op).
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_routes={RUN_JOB_TASK: {"queue": settings.train_queue}},
        task_default_queue=settings.train_queue,
        task_serializer="json",
        accept_content=["json"],
        # Training jobs run for hours: no soft/hard time limit, and no Celery-level retries (the lease
        # and the reconciler re-run a job, resuming from its checkpoint).
        task_time_limit=None,
        task_soft_time_limit=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # `celery inspect` / `control` on Redis; the embedded filesystem transport would poll for
        # broadcasts nobody sends.
        worker_enable_remote_control=not embedded,
        worker_send_task_events=False,
    )
    return app


app = make_celery(get_worker_settings())


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    from worker.reconciler import start_reconciler_thread

    start_reconciler_thread(app, get_worker_settings(), task_name=RUN_JOB_TASK)


@worker_ready.connect
def _start_webhook_dispatcher(**_: Any) -> None:
    # Webhook deliveries are sent from a thread of the worker, never from the task that trains.
    from worker.webhooks import start_webhook_dispatcher

    start_webhook_dispatcher(get_worker_settings())


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    # With --pool=solo the task runs in this process, so the metrics it updates are the ones served here.
    settings = get_worker_settings()
    if settings.worker_metrics_port is not None:
        from worker.metrics import serve

        serve(settings.worker_metrics_port, settings.worker_metrics_host)


@worker_shutting_down.connect
def _stop_supervisors(sig: str = "", how: str = "", exitcode: int = 0, **_: Any) -> None:
    # Runs inside the signal handler, on the main thread that (with --pool=solo) is running the task: only
    # set a flag; the supervisor sees it within a fraction of a second, stops its child with a checkpoint
    # and puts the job back in the queue.
    from worker.supervisor import request_shutdown

    log.info("worker shutting down (%s, %s): stopping the running job, if any", sig, how)
    request_shutdown()
