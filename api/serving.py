"""The API's side of the serving line (shared.serving): send a checked prediction to a
warm inference worker over Redis and block on its answer. Nothing is written to the
database on the way; the worker records the prediction afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import cast

import redis

from shared.config import is_redis_url
from shared.serving import PredictCall, alive_key, decode_reply, reply_key, requests_key

log = logging.getLogger(__name__)

# How long one look at a queue's alive key is trusted: an EXISTS per second per API
# process, instead of one per prediction.
_ALIVE_CACHE_SECONDS = 1.0
# The longest single BLPOP: the socket timeout must outlast it.
_SLICE_SECONDS = 4.0


class ServingLine:
    """Send predictions to the queue's serving workers and wait for their answers."""

    def __init__(self, broker_url: str) -> None:
        self._redis = redis.Redis.from_url(
            broker_url, socket_timeout=_SLICE_SECONDS + 5.0, socket_connect_timeout=2.0
        )
        self._lock = threading.Lock()
        self._open: dict[str, tuple[bool, float]] = {}

    @staticmethod
    def for_broker(broker_url: str, *, enabled: bool) -> ServingLine | None:
        """A line over the broker's Redis, or None (no Redis broker, or switched off)."""
        if not enabled or not is_redis_url(broker_url):
            return None
        return ServingLine(broker_url)

    def is_open(self, queue: str) -> bool:
        """Whether a worker serves `queue` now (looked up at most once a second)."""
        now = time.monotonic()
        with self._lock:
            known = self._open.get(queue)
        if known is not None and now - known[1] < _ALIVE_CACHE_SECONDS:
            return known[0]
        try:
            is_open = bool(self._redis.exists(alive_key(queue)))
        except redis.RedisError:
            log.warning("cannot look at the serving line of %s", queue, exc_info=True)
            is_open = False
        with self._lock:
            self._open[queue] = (is_open, now)
        return is_open

    def send(self, call: PredictCall) -> None:
        """Put the request on its queue's list; raises redis.RedisError if that fails."""
        self._redis.rpush(requests_key(call.queue), call.encode())

    def wait(
        self, call_id: uuid.UUID, timeout: float
    ) -> tuple[dict[str, object] | None, str | None] | None:
        """(answer, error) once the worker answers, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        key = reply_key(call_id)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                # At least 1 ms: Redis counts whole milliseconds, and 0 means forever.
                timeout = max(0.001, min(left, _SLICE_SECONDS))
                got = cast("list[bytes] | None", self._redis.blpop([key], timeout=timeout))
            except redis.RedisError:
                log.warning("lost the serving line while waiting for %s", call_id, exc_info=True)
                return None
            if got is not None:
                return decode_reply(got[1])
