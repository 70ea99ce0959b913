"""The run_job message the API writes straight into Redis (app/queue_redis.py) is the one Celery writes.

Held against a message Celery's own `send_task` pushed to the same Redis, key by key; read back by kombu's
Redis transport, as a worker reads it; and found by the reconciler's look into the queue. tests/e2e runs a
real Celery worker on what the API sends.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
import redis
from kombu import Connection, Queue

from app.queue import RUN_JOB_TASK, CeleryJobQueue, make_celery_client
from app.queue_redis import RedisSender
from app.settings import Settings
from worker.broker_queue import RedisQueue

# What differs between two sends by design: ids, and who sent it.
PER_MESSAGE_HEADERS = {"id", "root_id", "origin"}
PER_MESSAGE_PROPERTIES = {"correlation_id", "reply_to", "delivery_tag"}


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    name = f"test-train-{uuid4().hex[:8]}"
    yield name
    redis.Redis.from_url(redis_url).delete(name)


def pushed(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """The queue's messages, oldest first (kombu pushes at the head, a worker pops at the tail)."""
    raw = redis.Redis.from_url(redis_url).lrange(queue, 0, -1)
    return [json.loads(item) for item in reversed(raw)]


def test_the_message_is_the_one_celery_sends(redis_url: str, queue_name: str) -> None:
    settings = Settings(broker_url=redis_url, train_queue=queue_name)
    make_celery_client(settings).send_task(RUN_JOB_TASK, args=["job_celery"], queue=queue_name)
    RedisSender(redis_url, queue=queue_name, task=RUN_JOB_TASK, timeout=2).send("job_lean")
    celery, lean = pushed(redis_url, queue_name)

    assert set(lean) == set(celery)
    assert {k: v for k, v in lean.items() if k not in ("body", "headers", "properties")} == {
        k: v for k, v in celery.items() if k not in ("body", "headers", "properties")
    }
    assert set(lean["headers"]) == set(celery["headers"])
    for name, value in celery["headers"].items():
        if name in PER_MESSAGE_HEADERS:
            continue
        expected = value.replace("job_celery", "job_lean") if isinstance(value, str) else value
        assert lean["headers"][name] == expected, name
    assert lean["headers"]["root_id"] == lean["headers"]["id"] == lean["properties"]["correlation_id"]
    assert set(lean["properties"]) == set(celery["properties"])
    for name, value in celery["properties"].items():
        if name not in PER_MESSAGE_PROPERTIES:
            assert lean["properties"][name] == value, name
    celery_body = json.loads(base64.b64decode(celery["body"]))
    lean_body = json.loads(base64.b64decode(lean["body"]))
    assert lean_body == [["job_lean"], *celery_body[1:]]


def test_kombu_reads_it_as_a_worker_does(redis_url: str, queue_name: str) -> None:
    RedisSender(redis_url, queue=queue_name, task=RUN_JOB_TASK, timeout=2).send("job_read")
    with Connection(redis_url) as connection:
        queue = Queue(queue_name, routing_key=queue_name)
        message = connection.SimpleQueue(queue).get(timeout=5)
        assert message.headers["task"] == RUN_JOB_TASK
        assert message.decode()[0] == ["job_read"]
        assert message.delivery_info["routing_key"] == queue_name
        message.ack()


def test_the_reconciler_finds_the_job_of_a_message_it_sent(redis_url: str, queue_name: str) -> None:
    settings = Settings(broker_url=redis_url, train_queue=queue_name)
    queue = CeleryJobQueue(settings, session_factory=None)  # type: ignore[arg-type]  # no send fails here
    assert queue.redis_sender is not None  # a redis:// broker: the lean path
    queue.send_run_job("job_sent")
    in_broker = RedisQueue(redis_url, queue=queue_name, task=RUN_JOB_TASK, timeout=2)
    assert in_broker(["job_sent", "job_never_sent"]) == {"job_sent"}


def test_other_brokers_go_through_celery(tmp_path: Any) -> None:
    settings = Settings(broker_url="memory://", broker_dir=tmp_path)
    assert CeleryJobQueue(settings, session_factory=None).redis_sender is None  # type: ignore[arg-type]
