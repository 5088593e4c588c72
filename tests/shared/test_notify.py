"""The job-ended signal on the real Redis: no lost wake-ups, a bounded wait, no Redis."""

from __future__ import annotations

import threading
import time
import uuid

import redis

from shared.notify import EXPIRE_SECONDS, JobEndSignal
from tests.support.servers import REDIS_URL


def test_an_announcement_before_the_wait_is_not_lost(redis_client: redis.Redis) -> None:
    signal = JobEndSignal(REDIS_URL)
    job = uuid.uuid4()
    signal.announce(job)
    assert 0 < redis_client.ttl(f"trainyard:ended:{job}") <= EXPIRE_SECONDS
    assert signal.wait(job, timeout=5.0) is True
    assert signal.wait(job, timeout=0.05) is False  # consumed: one announcement, one wake


def test_a_waiter_wakes_when_the_job_ends(redis_client: redis.Redis) -> None:
    signal = JobEndSignal(REDIS_URL)
    job = uuid.uuid4()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(signal.wait(job, timeout=30.0)))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()  # still blocked: nothing announced yet
    JobEndSignal(REDIS_URL).announce(job)  # another process's client
    waiter.join(10)
    assert woke == [True]
    assert signal.wait(uuid.uuid4(), timeout=0.05) is False  # other jobs time out


def test_without_redis_callers_poll() -> None:
    signal = JobEndSignal("filesystem://")
    assert signal.available is False
    signal.announce(uuid.uuid4())  # a no-op, not an error
    assert signal.wait(uuid.uuid4(), timeout=1.0) is False
