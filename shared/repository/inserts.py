"""Idempotent multi-row inserts, on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

# Rows per executemany call: bounds the memory of one call's parameter lists.
_CHUNK = 10_000


def dialect_insert(session: Session, table: Any) -> Any:
    """INSERT for the session's database, with its ON CONFLICT clauses."""
    postgres = session.get_bind().dialect.name == "postgresql"
    return (pg_insert if postgres else sqlite_insert)(table)


def insert_ignoring_duplicates(
    session: Session, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of many rows, so a retried write is a no-op.

    An executemany: SQLAlchemy compiles the statement once and sends the rows in
    multi-row batches ("insertmanyvalues"); a VALUES clause built from the rows would be
    compiled anew for every call (measured: most of the time of large writes).
    """
    if not rows:
        return
    # Every row needs every key (a missing one would not be NULL but an error).
    keys = {key for row in rows for key in row}
    for start in range(0, len(rows), _CHUNK):
        chunk = [{key: row.get(key) for key in keys} for row in rows[start : start + _CHUNK]]
        session.execute(dialect_insert(session, table).on_conflict_do_nothing(), chunk)
