"""What the broker holds: the "work on job X" messages still alive in Redis, per queue.

The sweeper re-sends messages only while a queue holds fewer than it has queued jobs, so
a backlog of queued jobs is never multiplied, and a message lost with Redis (a restart
without AOF) is sent again within a sweep or two. A message is alive while it waits in a
queue, or for a short while after a worker took it (Celery keeps it "unacked" until the
task ends; a worker that died before claiming the job leaves it there until Redis'
visibility timeout, an hour, which is why only fresh deliveries count). Only Redis can
be looked into; other brokers (the embedded filesystem transport) answer None and the
sweeper goes by time.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery

from shared.config import is_redis_url

# kombu's Redis transport keeps delivered, unacknowledged messages under these keys.
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


def live_messages(
    celery: Celery, queues: Iterable[str], *, delivered_within: float
) -> dict[str, list[str]] | None:
    """queue -> the job ids its live messages carry (a repeat shows twice), or None when
    the broker is not Redis."""
    if not is_redis_url(str(celery.conf.broker_url)):
        return None
    live: dict[str, list[str]] = {}
    wanted = list(queues)
    with celery.connection_for_read() as connection:
        client: Any = connection.default_channel.client
        for queue in wanted:
            live[queue] = [_job_id(raw) for raw in client.lrange(queue, 0, -1)]
        fresh = client.zrangebyscore(UNACKED_INDEX, time.time() - delivered_within, "+inf")
        for raw in client.hmget(UNACKED, fresh) if fresh else ():
            if raw is None:
                continue
            message, _exchange, routing_key = json.loads(raw)
            if routing_key in live:
                live[routing_key].append(_job_id(message))
    return {queue: [i for i in ids if i] for queue, ids in live.items()}


def _job_id(raw: bytes | str | dict[str, Any]) -> str:
    """The job id a task message carries (its one argument); "" when it is not ours."""
    try:
        message = json.loads(raw) if isinstance(raw, bytes | str) else raw
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
