"""The real PostgreSQL and Redis the tests use, and what the tests make on them.

TRAINYARD_TEST_PG (a server URL without a database), TRAINYARD_TEST_REDIS and
TRAINYARD_TEST_REDIS_LIVE point the tests elsewhere.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.orm import Session, sessionmaker

from shared.db import session_scope
from shared.tokens import create_token

PG_SERVER = os.environ.get("TRAINYARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TRAINYARD_TEST_REDIS", "redis://127.0.0.1:6379/15")
# The live worker gets a Redis database of its own, so it never consumes the messages
# that queue tests inspect on REDIS_URL.
LIVE_REDIS_URL = os.environ.get("TRAINYARD_TEST_REDIS_LIVE", "redis://127.0.0.1:6379/14")


def _admin_dsn() -> str:
    return PG_SERVER.replace("postgresql+psycopg://", "postgresql://") + "/postgres"


def create_database(name: str) -> str:
    """CREATE DATABASE name (dropping any leftover); returns its SQLAlchemy URL."""
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    """DROP DATABASE name, closing other sessions on it."""
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_token(sessions: sessionmaker[Session], owner: str) -> str:
    """A fresh plaintext token for `owner`."""
    with session_scope(sessions) as session:
        plaintext, _ = create_token(
            session=session, name=f"{owner}-{uuid.uuid4().hex[:6]}", owner=owner
        )
    return plaintext


@contextmanager
def database_outage(url: str) -> Iterator[None]:
    """The database at `url` refuses every connection, and loses the open ones, until the
    block ends: what a worker sees while PostgreSQL restarts, without stopping the server
    the other tests share."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@contextmanager
def database_outage_for(url: str, seconds: float) -> Iterator[threading.Thread]:
    """database_outage(url) from a thread for `seconds`, starting now; the block runs
    meanwhile and the outage has ended (joined) when it exits."""
    started = threading.Event()

    def outage() -> None:
        with database_outage(url):
            started.set()
            time.sleep(seconds)

    thread = threading.Thread(target=outage, name="database-outage", daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield thread
    finally:
        thread.join()
