"""What the HTTP benchmarks share: a scratch database, a free port and percentiles
(imported as a sibling module: the benches run as `python bench/<name>.py`)."""

from __future__ import annotations

import os
import socket

import psycopg

from cli.migrate import upgrade

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
