"""The run_job message written straight into Redis, as Celery's `send_task` writes it, at a tenth of the cost.

A submission's send was a fifth of the API's CPU in a burst (docs/BENCHMARKS.md, bursts): `send_task`
builds the message through Celery's signals, kombu's producer, its channel and its queue declaration,
0.6-1 ms of Python each time for one LPUSH. Here the message is the one Celery would send: the task
protocol 2 (a JSON envelope whose `body` is `[args, kwargs, embed]` in base64, the task's name and id in
`headers`) in kombu's Redis layout (`properties` with `delivery_info`, a `delivery_tag`, `body_encoding`),
pushed at the head of the queue's list, where the worker's BRPOP takes it from the tail. Priority 0 is the
queue's own list (kombu names a list per priority step; we send none).

Redis only: any other broker (the embedded filesystem transport) goes through Celery (app/queue.py).
tests/api/test_queue_redis.py holds this message against one that Celery itself writes, key by key, and
tests/e2e runs a real worker on what this sends.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any
from uuid import uuid4

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

# Celery's `embed` for a task without callbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_DELIVERY_MODE_PERSISTENT = 2


def run_job_message(job_id: str, *, task: str, queue: str, origin: str, reply_to: str) -> str:
    """The JSON that Celery 5 (task protocol 2, kombu's Redis transport) pushes for `send_task(task, [job_id])`."""
    task_id = str(uuid4())
    body = base64.b64encode(json.dumps([[job_id], {}, _EMBED]).encode()).decode()
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr([job_id]),
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "delivery_mode": _DELIVERY_MODE_PERSISTENT,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid4()),
    }
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )


class RedisSender:
    """Sends run_job messages to `queue` on the Redis at `url`; thread-safe (redis-py pools its connections).

    A send that fails to connect or times out is tried once more on a new connection (as `send_task`'s
    retry policy did), then raises: the caller clears the job's `dispatched_at` for the reconciler."""

    def __init__(self, url: str, *, queue: str, task: str, timeout: float) -> None:
        self.queue = queue
        self.task = task
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"  # who sent it, as Celery says it
        self.reply_to = str(uuid4())  # Celery's per-process oid; results are ignored, nobody replies
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ConstantBackoff(0.2), retries=1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    def send(self, job_id: str) -> None:
        message = run_job_message(job_id, task=self.task, queue=self.queue, origin=self.origin, reply_to=self.reply_to)
        self._client.lpush(self.queue, message)
