"""A counter in Redis that moves whenever a token is revoked, so API processes may keep
checked tokens in memory and still refuse a revoked one on its next request.

Every revocation (API or CLI) increments it after its commit; an API process serves a
token from its cache only while the counter reads what it read when the token was
checked. Without Redis (the embedded filesystem broker), or when Redis does not answer,
`generation` is None and every request checks its token in the database.

The counter starts at a random 62-bit value, not at 0: a Redis restarted without its
data starts a new count, and a token cached under the old count must never match it
again (counting 1, 2, 3... afresh would reach the old value after as many revocations).
"""

from __future__ import annotations

import logging
import secrets
import time

import redis

from shared.config import is_redis_url

log = logging.getLogger(__name__)

GENERATION_KEY = "trainyard:tokens:generation"


class Revocations:
    """Read and move the revocation counter on the broker's Redis."""

    def __init__(self, broker_url: str) -> None:
        is_redis = is_redis_url(broker_url)
        self._redis = (
            redis.Redis.from_url(broker_url, socket_timeout=2.0, socket_connect_timeout=2.0)
            if is_redis
            else None
        )
        self._quiet_until = 0.0

    def generation(self) -> int | None:
        """The counter now, or None when it cannot be read (nothing may be cached)."""
        if self._redis is None or time.monotonic() < self._quiet_until:
            return None
        try:
            value = self._redis.get(GENERATION_KEY)
            if value is None:  # a new Redis (or a restarted one): a new random start
                self._start_count()
                value = self._redis.get(GENERATION_KEY)
            return int(value) if isinstance(value, bytes | str | int) else None
        except (redis.RedisError, ValueError):
            # Not again for a second: an unreachable Redis must not cost every request
            # its connect timeout.
            self._quiet_until = time.monotonic() + 1.0
            log.warning("cannot read the token revocation counter", exc_info=True)
            return None

    def _start_count(self) -> None:
        assert self._redis is not None
        self._redis.set(GENERATION_KEY, secrets.randbits(62), nx=True)

    def announce(self) -> bool:
        """Say a token was revoked (after the commit); False when it could not be said:
        API processes then keep the revoked token at most TRAINYARD_TOKEN_CACHE_SECONDS.
        Without Redis no process caches tokens: nothing to say."""
        if self._redis is None:
            return True
        try:
            self._start_count()
            self._redis.incr(GENERATION_KEY)
            return True
        except redis.RedisError:
            log.warning("could not announce a token revocation", exc_info=True)
            return False
