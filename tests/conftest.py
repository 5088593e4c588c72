"""Fixtures on the machine's real PostgreSQL and Redis (no fakes, no eager Celery).

TRAINYARD_TEST_PG (server URL without a database) and TRAINYARD_TEST_REDIS point elsewhere.
Each test session gets its own database, dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from cli.migrate import upgrade
from shared import repository
from shared.config import Settings
from shared.db import make_engine, make_session_factory, session_scope
from shared.models import Job
from tests.support.fixture_types import CountRows, NewJob
from tests.support.servers import REDIS_URL, create_database, drop_database, make_token

pytest_plugins = ["tests.live"]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database migrated to head for this test session."""
    name = f"trainyard_test_{os.getpid()}"
    url = create_database(name)
    upgrade(url, "head")
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture()
def clean_db(engine: Engine) -> None:
    """Empty every table (jobs cascade to metrics, traces, checkpoints and events)."""
    with engine.begin() as conn:
        conn.execute(
            text("TRUNCATE jobs, sweeps, api_tokens, audit_events RESTART IDENTITY CASCADE")
        )


@pytest.fixture()
def new_job(sessions: sessionmaker[Session], clean_db: None) -> NewJob:
    """A factory of queued job rows on an emptied database: `new_job(spec=..., owner=...)`."""

    def make(spec: dict[str, Any] | None = None, *, owner: str = "o", kind: str = "train") -> Job:
        with session_scope(sessions) as session:
            return repository.create_job(
                session=session, owner=owner, kind=kind, spec=spec or {"x": 1}, queue=kind
            )

    return make


@pytest.fixture()
def count_rows(sessions: sessionmaker[Session]) -> CountRows:
    """count_rows(Model, job_id): how many rows of Model's table belong to the job."""

    def count(model: Any, job_id: uuid.UUID) -> int:
        with sessions() as session:
            query = select(func.count()).select_from(model).where(model.job_id == job_id)
            return int(session.scalar(query) or 0)

    return count


@pytest.fixture()
def redis_client() -> Iterator[redis.Redis]:
    """The test Redis database, emptied before and after each test."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture()
def settings(pg_url: str, tmp_path: Path) -> Settings:
    # No request rate limit: in-process tests fire requests faster than any client would
    # (tests/api/test_quotas.py turns it on). Every JSON answer is checked against its
    # OpenAPI model: an answer that drifts from the contract fails the test with a 500.
    return Settings(
        database_url=pg_url,
        broker_url=REDIS_URL,
        home=tmp_path / "home",
        rate_limit="",
        check_responses=True,
    )


@pytest.fixture()
def app(settings: Settings, clean_db: None, redis_client: redis.Redis) -> Flask:
    return create_app(settings)


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def alice(app: Flask, sessions: sessionmaker[Session]) -> dict[str, str]:
    """Authorization headers for owner 'alice'."""
    return {"Authorization": f"Bearer {make_token(sessions, 'alice')}"}


@pytest.fixture()
def bob(app: Flask, sessions: sessionmaker[Session]) -> dict[str, str]:
    """Authorization headers for owner 'bob'."""
    return {"Authorization": f"Bearer {make_token(sessions, 'bob')}"}
