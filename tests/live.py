"""A real Celery worker process and a real gunicorn API on PostgreSQL + Redis.

The processes start once per test session on a database of their own: the worker runs
whichever queued job comes first in its queue, so it must not see the rows other tests
leave behind. Each test gets a token of a fresh owner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy.orm import Session, sessionmaker

from cli.migrate import upgrade
from cli.serve import api_command, stop_children, wait_healthy, worker_command
from shared.db import make_engine, make_session_factory
from shared.models import FINAL_STATUSES
from shared.queues import ALL_TRAIN_QUEUES, QUEUE_INFER, QUEUE_SWEEPS
from tests.support.processes import die_with_parent, free_port
from tests.support.servers import LIVE_REDIS_URL, create_database, drop_database, make_token

ROOT = Path(__file__).resolve().parents[2]
FINAL = tuple(str(s) for s in FINAL_STATUSES)


@dataclass
class LiveService:
    base_url: str
    headers: dict[str, str]

    def post_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        resp = requests.post(
            f"{self.base_url}/api/v1/jobs",
            json={"kind": "train", "spec": spec},
            headers=self.headers,
            timeout=30,
        )
        assert resp.status_code == 202, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def get(self, path: str, **params: Any) -> requests.Response:
        resp = requests.get(
            f"{self.base_url}{path}", headers=self.headers, params=params, timeout=30
        )
        assert resp.status_code == 200, resp.text
        return resp

    def wait(
        self, job_id: str, *, until: tuple[str, ...] = FINAL, timeout: float = 240.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in until or job["status"] in FINAL:
                return job
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the live processes is an e2e test, marked or not (`-m "not e2e"`
    leaves out exactly the tests that start servers)."""
    for item in items:
        if "live_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def live_db_url(pg_url: str) -> Iterator[str]:
    """The live processes' database, migrated to head."""
    name = pg_url.rsplit("/", 1)[1] + "_live"
    url = create_database(name)
    upgrade(url, "head")
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def live_sessions(live_db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(live_db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def live_url(live_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `celery worker` and gunicorn as child processes; stop them after the session."""
    redis.Redis.from_url(LIVE_REDIS_URL).flushdb()
    port = free_port()
    logs = tmp_path_factory.mktemp("live")
    env = {
        **os.environ,
        "TRAINYARD_DATABASE_URL": live_db_url,
        "TRAINYARD_BROKER_URL": LIVE_REDIS_URL,
        "TRAINYARD_HOME": str(logs),
        "TRAINYARD_API_PORT": str(port),
        "TRAINYARD_HEARTBEAT_SECONDS": "0.3",
        "TRAINYARD_FLUSH_SECONDS": "0.3",
        "PYTHONPATH": str(ROOT),
    }
    procs = []
    for name, cmd in (
        ("worker", worker_command(list(ALL_TRAIN_QUEUES))),
        ("worker-infer", worker_command([QUEUE_INFER])),
        ("sweep-controller", worker_command([QUEUE_SWEEPS])),
        ("api", api_command("127.0.0.1", port, 2)),
    ):
        out = (logs / f"{name}.log").open("w")
        child = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # no orphan may consume the next run's messages
        )  # fmt: skip
        procs.append((name, child))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, timeout=90)
        yield base
    finally:
        stop_children([proc for _, proc in procs], timeout=30)
        for name, proc in procs:
            if proc.returncode not in (0, -15):
                sys.stderr.write((logs / f"{name}.log").read_text()[-5000:])


@pytest.fixture()
def live(live_url: str, live_sessions: sessionmaker[Session]) -> LiveService:
    """The live service with a token of a fresh owner."""
    owner = f"e2e-{uuid.uuid4().hex[:8]}"
    return LiveService(live_url, {"Authorization": f"Bearer {make_token(live_sessions, owner)}"})
