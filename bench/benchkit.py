"""What the HTTP benchmarks share: a scratch database, a free port and percentiles
(imported as a sibling module: the benches run as `python bench/<name>.py`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from cli.migrate import upgrade
from shared.db import make_engine, make_session_factory, session_scope
from shared.tokens import create_token

SERVER = os.environ.get("TRAINYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


def create_database(prefix: str) -> tuple[str, str]:
    """A fresh PostgreSQL database on TRAINYARD_BENCH_PG, migrated to head: (name, URL)."""
    name = f"{prefix}_{os.getpid()}"
    drop_database(name)
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{SERVER.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    upgrade(url)
    return name, url


@dataclass
class Scratch:
    """A bench's own database, Redis database (flushed), log folder and token."""

    name: str
    url: str
    logs: Path
    sessions: Any
    token: str

    def close(self) -> None:
        self.sessions.kw["bind"].dispose()
        drop_database(self.name)


def scratch(prefix: str, redis_url: str) -> Scratch:
    """A fresh database and token for one bench run, its Redis database flushed."""
    redis.Redis.from_url(redis_url).flushdb()
    name, url = create_database(prefix)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"{prefix}-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    sessions = make_session_factory(make_engine(url))
    with session_scope(sessions) as session:
        token, _ = create_token(session=session, owner="bench", name="bench")
    return Scratch(name, url, logs, sessions, token)


def drop_database(name: str) -> None:
    """DROP DATABASE name, closing other sessions on it."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
