"""Which queued jobs still have their message in the broker: the reconciler re-sends only the others.

A queued job waiting behind a long one has its message in Redis the whole time; sending it again every
interval only piled up duplicates (each a no-op claim later). A message is lost when Redis restarts empty
(or from an older snapshot), and then it is not there: that, and only that, is what a re-send is for.

Redis only, the production broker. kombu keeps a queue as a list named after it, newest pushed at the
head, taken from the tail (one more list per priority step, `train\\x06\\x163`…: we send no priority, but
a look there is free), and a message a worker took but has not acknowledged in the `unacked` hash. A
message's body is `[args, kwargs, embed]`, base64 JSON; run_job's args are `[job_id]`. Another broker (the
embedded filesystem transport, memory in tests) cannot be asked, and the reconciler re-sends as before.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from typing import Any

import redis

CHUNK = 500  # messages per LRANGE (~0.7 KB each)
# kombu.transport.redis: the separator and steps of its per-priority lists, and its hash of unacked messages.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"


class RedisQueue:
    """`queue(job_ids)`: those of `job_ids` whose run_job message is in the queue or taken by a worker."""

    def __init__(self, url: str, *, queue: str, task: str, timeout: float) -> None:
        self.url = url
        self.queue = queue
        self.task = task
        self.timeout = timeout

    def __call__(self, job_ids: Collection[str]) -> set[str]:
        wanted = set(job_ids)
        found: set[str] = set()
        client = redis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        try:
            for raw in client.hvals(UNACKED):
                found |= wanted & {self._job_id(_unacked_message(raw))}
            for key in self._lists():
                for chunk in _tail_first(client, key):
                    found |= wanted & {self._job_id(_message(raw)) for raw in chunk}
                    if found == wanted:
                        return found
        finally:
            client.close()
        return found

    def _lists(self) -> list[str]:
        return [self.queue if step == 0 else f"{self.queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]

    def _job_id(self, message: dict[str, Any] | None) -> str | None:
        """The job of a run_job message; None for anything else (another task, a body we cannot read)."""
        if message is None or message.get("headers", {}).get("task") != self.task:
            return None
        try:
            args = json.loads(base64.b64decode(message["body"]))[0]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        return args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None


def _tail_first(client: redis.Redis, key: str) -> Any:
    """The list in chunks from its tail (the oldest messages, which the reconciler asks about). A worker
    popping meanwhile shifts what is left, so a message may be missed: then its job is sent once more,
    which is harmless; a message is never reported that was not there."""
    length = int(client.llen(key))
    for end in range(-1, -length - 1, -CHUNK):
        yield client.lrange(key, end - CHUNK + 1, end)


def _message(raw: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unacked_message(raw: bytes | str) -> dict[str, Any] | None:
    """An unacked entry is `[message, exchange, routing_key]`."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else None
