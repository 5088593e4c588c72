"""PostgreSQL binary COPY of one job's metric / trace rows, duplicates ignored.

The background writer (worker/writer.py) writes every batch through here on PostgreSQL;
SQLite takes the multi-row INSERT of `shared.repository.record_metrics` / `record_traces`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session


def copy_ignoring_duplicates(
    *,
    session: Session,
    table: Table,
    job_id: uuid.UUID,
    rows: Sequence[Mapping[str, Any]],
    optimistic: bool = True,
) -> bool:
    """PostgreSQL bulk write of `table` rows for one job: binary COPY, duplicates ignored.

    COPY itself cannot skip rows that already exist, and a retried job re-writes the
    steps it had written before. With `optimistic` the rows are first COPYed straight
    into the table inside a savepoint: rows are new almost always, and this is as fast as
    a raw COPY. If any row exists (UniqueViolation) the savepoint is rolled back and the
    rows go through a per-connection temporary staging table (emptied at commit) and one
    INSERT ... SELECT ... ON CONFLICT DO NOTHING, which keeps the write idempotent like
    record_metrics / record_traces. Returns True when duplicates were met, so the caller
    can go straight to staging for the rest of a re-delivered job. Call it once per
    table per transaction (a second staged call re-offers the first call's rows).
    """
    if not rows:
        return False
    known = [col.name for col in table.columns if col.name != "job_id"]
    present: set[str] = set().union(*rows)
    if unknown := present.difference(known):
        raise ValueError(f"{table.name} has no column(s) {', '.join(sorted(unknown))}")
    columns = [name for name in known if name in present]
    if len(columns) > 1 and all(len(row) == len(columns) for row in rows):
        pick = itemgetter(*columns)  # every row has every column: the fast path
        values = [(job_id, *pick(row)) for row in rows]
    else:
        values = [(job_id, *(row.get(name) for name in columns)) for row in rows]

    conn = session.connection()
    oids = _column_oids(conn, table.name)
    types = [oids[name] for name in ["job_id", *columns]]
    names = sql.SQL(", ").join(sql.Identifier(name) for name in ["job_id", *columns])
    target, stage = sql.Identifier(table.name), sql.Identifier(f"_stage_{table.name}")
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cur:
        if optimistic:
            cur.execute("SAVEPOINT trainyard_copy")
            try:
                _copy_rows(cur, target, names, types, values)
                return False
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT trainyard_copy")
        cur.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
            ).format(stage, target)
        )
        _copy_rows(cur, stage, names, types, values)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                target, names, names, stage
            )
        )
    return True


def _copy_rows(
    cur: psycopg.Cursor[Any],
    table: sql.Identifier,
    names: sql.Composable,
    types: list[int],
    values: Iterable[tuple[Any, ...]],
) -> None:
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, names)
    with cur.copy(copy_sql) as copy:
        copy.set_types(types)
        for value in values:
            copy.write_row(value)


def _column_oids(conn: Connection, table: str) -> dict[str, int]:
    """Column name -> type OID (binary COPY needs them), cached on the pooled connection."""
    cache: dict[str, dict[str, int]] = conn.info.setdefault("trainyard_column_oids", {})
    if table not in cache:
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cur:
            cur.execute(
                "SELECT attname, atttypid::int FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
            cache[table] = {name: oid for name, oid in cur.fetchall()}
    return cache[table]
