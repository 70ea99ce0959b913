"""The reconciler looks in Redis before it sends a queued job again (worker/broker_queue.py).

A job waiting behind a long one has its message in the queue the whole time: it used to get another every
interval. Now only a message that is not there (lost with a Redis that restarted empty) is sent again. The
messages are the API's own (its Celery client), in a queue of this test's own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Job, utcnow
from app.queue import RUN_JOB_TASK, make_celery_client
from tests.worker.conftest import add_job, fake_spec, get_job
from tests.worker.test_reconciler import Outbox
from worker.broker_queue import UNACKED, RedisQueue
from worker.reconciler import reconcile_once


@pytest.fixture
def broker(redis_url: str, settings: Any) -> Iterator[tuple[Any, redis.Redis]]:
    """Worker settings on the test Redis with a queue of this test's own; the queue and the unacked
    entries the test made are removed afterwards."""
    queue = f"test-reconciler-{uuid.uuid4().hex[:8]}"
    configured = settings.model_copy(update={"broker_url": redis_url, "train_queue": queue})
    client = redis.Redis.from_url(redis_url)
    before = set(client.hkeys(UNACKED))
    yield configured, client
    client.delete(queue)
    made = set(client.hkeys(UNACKED)) - before
    if made:
        client.hdel(UNACKED, *made)


def _sent_long_ago(sessions: sessionmaker[Session], settings: Any) -> str:
    long_ago = utcnow() - timedelta(seconds=settings.redispatch_seconds + 60)
    return add_job(sessions, fake_spec("succeed"), created_at=long_ago, dispatched_at=long_ago)


def _take(client: redis.Redis, queue: str) -> str:
    """What a worker does with acks_late: the message leaves the list for the `unacked` hash until acked."""
    raw = client.rpop(queue)
    assert raw is not None
    message = json.loads(raw)
    tag = str(message["properties"]["delivery_tag"])
    client.hset(UNACKED, tag, json.dumps([message, "", queue]))
    return tag


def test_a_message_still_in_redis_is_not_sent_again(
    sessions: sessionmaker[Session], broker: tuple[Any, redis.Redis]
) -> None:
    settings, client = broker
    celery = make_celery_client(settings)
    taken = _sent_long_ago(sessions, settings)  # a worker took its message and has not acknowledged it
    waiting = _sent_long_ago(sessions, settings)  # waiting in the queue behind a long job
    lost = _sent_long_ago(sessions, settings)  # its message went with a Redis that restarted empty
    for job_id in (taken, waiting):
        celery.send_task(RUN_JOB_TASK, args=[job_id], queue=settings.train_queue)
    tag = _take(client, settings.train_queue)
    look = RedisQueue(settings.broker_url, queue=settings.train_queue, task=RUN_JOB_TASK, timeout=2)

    outbox = Outbox()
    result = reconcile_once(settings=settings, sessions=sessions, send=outbox, queue=look)
    assert outbox.sent == [lost]
    assert result.waiting == sorted([taken, waiting])
    assert client.llen(settings.train_queue) == 1  # no duplicate of `waiting`

    # They are asked about again one interval later, not every round.
    again = reconcile_once(settings=settings, sessions=sessions, send=outbox, queue=look)
    assert (again.sent, again.waiting, outbox.sent) == ([], [], [lost])

    # Redis restarts empty: once they are due again, both are sent.
    client.delete(settings.train_queue)
    client.hdel(UNACKED, tag)
    long_ago = utcnow() - timedelta(seconds=settings.redispatch_seconds + 60)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id.in_([taken, waiting])).values(dispatched_at=long_ago))
    reconcile_once(settings=settings, sessions=sessions, send=outbox, queue=look)
    assert sorted(outbox.sent) == sorted([lost, taken, waiting])
    assert get_job(sessions, waiting).dispatched_at > long_ago


def test_a_broker_that_cannot_be_asked_gets_the_job_sent(sessions: sessionmaker[Session], settings: Any) -> None:
    """Unreachable (or another broker): sending again is the safe side, a duplicate is a no-op claim."""

    def unreachable(job_ids: Any) -> set[str]:
        raise ConnectionError("broker unreachable")

    job_id = _sent_long_ago(sessions, settings)
    outbox = Outbox()
    result = reconcile_once(settings=settings, sessions=sessions, send=outbox, queue=unreachable)
    assert (outbox.sent, result.waiting) == ([job_id], [])
