"""Fixtures of the shared-package tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cli.migrate import upgrade
from shared.db import make_engine, make_session_factory


@pytest.fixture(params=["postgresql", "sqlite"])
def db(
    request: pytest.FixtureRequest, sessions: sessionmaker[Session], clean_db: None, tmp_path: Path
) -> Iterator[sessionmaker[Session]]:
    """The PostgreSQL test database, then a fresh SQLite file (the embedded default)."""
    if request.param == "postgresql":
        yield sessions
        return
    url = f"sqlite:///{tmp_path / 'trainyard.db'}"
    upgrade(url, "head")
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()
