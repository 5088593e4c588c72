"""One throwaway cluster (PostgreSQL, Redis, API, sweeper) for every chaos test.

The chaos tests start their own servers and kill processes for about three minutes;
they are part of the whole suite (and CI). `pytest -m chaos` runs them alone,
`pytest -m "not chaos"` leaves them out.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from tests.chaos.cluster import Cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Servers, schema, token, API and sweeper; stopped (all of it) however the run ends."""
    with Cluster(keep_files=bool(os.environ.get("TRAINYARD_CHAOS_KEEP"))) as started:
        yield started


@pytest.fixture()
def rng() -> random.Random:
    """Random kill points; TRAINYARD_CHAOS_SEED replays a run."""
    seed = int(os.environ.get("TRAINYARD_CHAOS_SEED", random.randrange(2**31)))
    print(f"TRAINYARD_CHAOS_SEED={seed}")
    return random.Random(seed)
