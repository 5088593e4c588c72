"""A real Celery worker process and a real gunicorn API on PostgreSQL + Redis.

The processes start once per test session; each test gets a fresh token, since other
tests empty the tables between tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy.orm import Session, sessionmaker

from cli.serve import api_command, stop_children, wait_healthy, worker_command
from shared.models import FINAL_STATUSES
from shared.queues import ALL_TRAIN_QUEUES, QUEUE_INFER
from tests.support.servers import LIVE_REDIS_URL, make_token

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


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_url(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `celery worker` and gunicorn as child processes; stop them after the session."""
    redis.Redis.from_url(LIVE_REDIS_URL).flushdb()
    port = free_port()
    logs = tmp_path_factory.mktemp("live")
    env = {
        **os.environ,
        "TRAINYARD_DATABASE_URL": pg_url,
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
        ("api", api_command("127.0.0.1", port, 2)),
    ):
        out = (logs / f"{name}.log").open("w")
        procs.append(
            (name, subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        )
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
def live(live_url: str, sessions: sessionmaker[Session]) -> LiveService:
    """The live service with a token of a fresh owner."""
    return LiveService(live_url, {"Authorization": f"Bearer {make_token(sessions, 'e2e')}"})
