""" "Job X ended", from the worker to an API process waiting for it (predict).

With a Redis broker the worker pushes to a per-job list after the job's final status is
committed, and the API blocks on it (BLPOP): it wakes within a millisecond instead of
polling the database. A push that comes before the API starts waiting stays in the list
(it expires after a minute), so no wake-up is lost. Without Redis (the embedded
filesystem broker) `available` is False and the API polls the job row instead.
"""

from __future__ import annotations

import logging
import time
import uuid

import redis

from shared.config import is_redis_url

log = logging.getLogger(__name__)

EXPIRE_SECONDS = 60


def _key(job_id: uuid.UUID) -> str:
    return f"trainyard:ended:{job_id}"


class JobEndSignal:
    """Announce and await the end of jobs over the broker's Redis, when it is Redis."""

    def __init__(self, broker_url: str) -> None:
        is_redis = is_redis_url(broker_url)
        # Timeouts bound every call, so a half-open connection cannot hang a request;
        # the socket timeout leaves room for the longest BLPOP slice a waiter asks for.
        self._redis = (
            redis.Redis.from_url(broker_url, socket_timeout=5.0, socket_connect_timeout=2.0)
            if is_redis
            else None
        )

    @property
    def available(self) -> bool:
        """Whether waiting can block on Redis (else callers poll)."""
        return self._redis is not None

    def announce(self, job_id: uuid.UUID) -> None:
        """Wake whoever waits for `job_id`; a failure only costs the waiter its next poll."""
        if self._redis is None:
            return
        try:
            with self._redis.pipeline() as pipe:
                pipe.lpush(_key(job_id), "1")
                pipe.expire(_key(job_id), EXPIRE_SECONDS)
                pipe.execute()
        except redis.RedisError:
            log.warning("could not announce the end of job %s", job_id, exc_info=True)

    def wait(self, job_id: uuid.UUID, timeout: float) -> bool:
        """Block up to `timeout` seconds (at most 4) for the announcement; True when it
        came. When Redis fails the call still takes its timeout, so a caller that loops
        on it backs off instead of spinning."""
        if self._redis is None or timeout <= 0:
            return False
        timeout = min(timeout, 4.0)
        started = time.monotonic()
        try:
            return self._redis.blpop([_key(job_id)], timeout=timeout) is not None
        except redis.RedisError:
            log.warning("could not wait for job %s on Redis", job_id, exc_info=True)
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))
            return False
