"""The token revocation counter on the real Redis: it moves on every announcement, and a
Redis that lost its data starts a count that no cached token can match."""

from __future__ import annotations

import redis

from shared.revocations import GENERATION_KEY, Revocations
from tests.support.servers import REDIS_URL


def test_every_announcement_moves_the_counter(redis_client: redis.Redis) -> None:
    revocations = Revocations(REDIS_URL)
    first = revocations.generation()
    assert first is not None
    assert revocations.announce() and revocations.generation() == first + 1


def test_a_restarted_redis_never_counts_back_to_an_old_value(redis_client: redis.Redis) -> None:
    revocations = Revocations(REDIS_URL)
    before = revocations.generation()
    assert before is not None and before > 1_000  # a random start, not 0
    redis_client.delete(GENERATION_KEY)  # what a restart without persistence does
    revocations.announce()  # counting afresh from 0 would read 1 here
    after = revocations.generation()
    assert after is not None and after not in range(before - 10, before + 10)
    redis_client.delete(GENERATION_KEY)
    assert revocations.generation() not in (None, 0, before, after)


def test_without_redis_nothing_may_be_cached() -> None:
    revocations = Revocations("filesystem://")
    assert revocations.generation() is None and revocations.announce()
