"""What the broker holds: the jobs whose "work on job X" message is still alive in Redis.

The sweeper re-sends a job's message only when the broker has none for it, so a backlog
of queued jobs is never multiplied and a message lost with Redis (a restart without AOF)
is sent again within one sweep. A message is alive while it waits in a queue, or for a
short while after a worker took it (Celery keeps it "unacked" until the task ends; a
worker that died before claiming the job leaves it there until Redis' visibility timeout,
an hour, which is why only fresh deliveries count). Only Redis can be looked into; other
brokers (the embedded filesystem transport) answer None and the sweeper goes by time.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery

# kombu's Redis transport keeps delivered, unacknowledged messages under these keys.
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


def waiting_job_ids(
    celery: Celery, queues: Iterable[str], *, delivered_within: float
) -> set[str] | None:
    """Ids of the jobs with a live message, or None when the broker is not Redis."""
    if not str(celery.conf.broker_url).startswith(("redis://", "rediss://", "unix://")):
        return None
    with celery.connection_for_read() as connection:
        client: Any = connection.default_channel.client
        ids = {_job_id(raw) for queue in queues for raw in client.lrange(queue, 0, -1)}
        fresh = client.zrangebyscore(UNACKED_INDEX, time.time() - delivered_within, "+inf")
        for raw in client.hmget(UNACKED, fresh) if fresh else ():
            if raw is not None:
                ids.add(_job_id(json.loads(raw)[0]))
    ids.discard("")
    return ids


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
