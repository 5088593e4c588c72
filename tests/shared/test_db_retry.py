"""Database work retried through an outage of the real PostgreSQL database, given up
after the window with a message a user can act on, and never retried for other errors."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, text

from shared.db_retry import DatabaseGone, is_transient, retry_database
from tests.support.servers import database_outage, database_outage_for


def _select_one(engine: Engine, tries: list[int]) -> int:
    tries.append(1)
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT 1")).scalar_one())


def test_work_is_retried_until_the_database_is_back(engine: Engine, pg_url: str) -> None:
    tries: list[int] = []
    with database_outage_for(pg_url, 1.5):
        result = retry_database(
            lambda: _select_one(engine, tries), what="testing", window_seconds=60
        )
    assert result == 1 and len(tries) > 1  # it failed during the outage, then got through


def test_an_outage_longer_than_the_window_says_so(engine: Engine, pg_url: str) -> None:
    tries: list[int] = []
    with database_outage(pg_url), pytest.raises(DatabaseGone) as caught:
        retry_database(lambda: _select_one(engine, tries), what="testing", window_seconds=0.5)
    assert len(tries) > 1
    assert caught.value.message.startswith("the database was unreachable for more than 0.5 s")
    assert "while testing" in caught.value.message
    assert "TRAINYARD_DB_OUTAGE_SECONDS" in caught.value.message


def test_other_errors_are_raised_at_once(engine: Engine) -> None:
    tries: list[int] = []

    def bad_statement() -> None:
        tries.append(1)
        with engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(sqlalchemy.exc.ProgrammingError):
        retry_database(bad_statement, what="testing", window_seconds=60)
    assert tries == [1]


def test_what_counts_as_the_database_being_gone(engine: Engine, pg_url: str) -> None:
    refused = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(sqlalchemy.exc.OperationalError) as down:
        refused.connect()
    assert is_transient(down.value)

    with (
        engine.connect() as conn,
        database_outage(pg_url),  # the open connection is cut
        pytest.raises(sqlalchemy.exc.DBAPIError) as cut,
    ):
        conn.execute(text("SELECT 1"))
    assert is_transient(cut.value)

    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.DBAPIError) as bad:
        conn.execute(text("SELECT 1/0"))
    assert not is_transient(bad.value)

    full = sqlalchemy.exc.OperationalError(
        "INSERT ...", {}, sqlite3.OperationalError("database or disk is full")
    )
    locked = sqlalchemy.exc.OperationalError(
        "INSERT ...", {}, sqlite3.OperationalError("database is locked")
    )
    assert not is_transient(full) and is_transient(locked)
