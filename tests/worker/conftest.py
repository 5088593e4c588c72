"""Fixtures of the worker tests."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from tests.support.fixture_types import ClaimedSink
from worker.sinks import DatabaseSink
from worker.writer import RowWriter


@pytest.fixture()
def claimed_sink(sessions: sessionmaker[Session]) -> ClaimedSink:
    """claimed_sink(settings, job_id): claim the job for worker "w" and build its sink on a
    clock the test moves (now[0]); returns (sink, writer, now)."""

    def make(settings: Settings, job_id: uuid.UUID) -> tuple[DatabaseSink, RowWriter, list[float]]:
        with session_scope(sessions) as session:
            repository.claim_job(
                session=session, job_id=job_id, worker="w", lease_seconds=60, max_attempts=3
            )
        now = [0.0]
        writer = RowWriter(sessions=sessions, job_id=job_id)
        sink = DatabaseSink(
            sessions=sessions,
            job_id=job_id,
            worker="w",
            settings=settings,
            clock=lambda: now[0],
            writer=writer,
        )
        return sink, writer, now

    return make
