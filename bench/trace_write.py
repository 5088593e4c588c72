"""Trace rows/s into PostgreSQL through the RowWriter, next to a raw psycopg COPY of the same rows.

    .venv/bin/python bench/trace_write.py [--rows 200000] [--rounds 5] [--chunk 400]

Creates its own database (trainyard_bench_<pid>, migrated with cli.migrate.upgrade) on the
server in TRAINYARD_BENCH_PG (default postgresql://postgres@127.0.0.1:5432) and drops it
at the end. Every measurement starts from an empty layer_traces table and a fresh job.

Variants, run interleaved (A B C A B C ...) because this machine is noisy; medians printed:
  writer      RowWriter.put() in chunks of --chunk rows (what the sink hands over), then
              close(): binary COPY into the table under a savepoint (staging table +
              INSERT ... ON CONFLICT DO NOTHING only after a duplicate), one transaction
              per batch, on the writer's thread
  copy-text   one `COPY layer_traces (...) FROM STDIN` of all rows (text format), one commit
  copy-binary the same COPY in binary format
Every variant starts from the same list of row dicts and converts them itself. The ratio
is taken against the faster raw COPY.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from cli.migrate import upgrade
from shared import repository
from shared.db import make_engine, make_session_factory, session_scope
from worker.writer import RowWriter

SERVER = os.environ.get("TRAINYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
COLUMNS = (
    "step",
    "layer",
    "kind",
    "numel",
    "norm",
    "mean",
    "std",
    "min",
    "max",
    "zero_frac",
    "nonfinite",
)

DROP = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def make_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n trace rows of a 12-block transformer: backward per module, param_grad per parameter."""
    rng = random.Random(seed)
    modules = ["embed"] + [
        f"blocks.{i}.{name}"
        for i in range(12)
        for name in ("ln1", "attn.qkv", "attn.proj", "ln2", "mlp.fc1", "mlp.fc2")
    ] + ["ln_f", "head"]  # fmt: skip
    per_step = [(name, "backward") for name in modules] + [
        (f"{name}.{param}", "param_grad") for name in modules for param in ("weight", "bias")
    ]
    rows: list[dict[str, Any]] = []
    step = 0
    while len(rows) < n:
        step += 1
        for layer, kind in per_step[: n - len(rows)]:
            norm = rng.lognormvariate(-2.0, 1.5)
            std = norm * rng.uniform(0.001, 0.05)
            rows.append(
                {
                    "step": step,
                    "layer": layer,
                    "kind": kind,
                    "numel": rng.choice((768, 2304, 589_824, 1_769_472, 2_359_296)),
                    "norm": norm,
                    "mean": rng.gauss(0.0, std / 10),
                    "std": std,
                    "min": -rng.uniform(3, 8) * std,
                    "max": rng.uniform(3, 8) * std,
                    "zero_frac": rng.random() * 0.05 if kind == "backward" else 0.0,
                    "nonfinite": 0,
                }
            )
    return rows


def new_job(engine: Engine, sessions: sessionmaker[Session]) -> uuid.UUID:
    """Empty the tables and create one job, so each measurement starts the same way."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs CASCADE"))
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session, owner="bench", kind="train", spec={}, queue="q"
        )
        return job.id


def through_writer(
    sessions: sessionmaker[Session], job_id: uuid.UUID, rows: list[dict[str, Any]], chunk: int
) -> float:
    start = time.perf_counter()
    writer = RowWriter(sessions=sessions, job_id=job_id)
    for i in range(0, len(rows), chunk):
        writer.put("layer_traces", rows[i : i + chunk])
    writer.close()
    return time.perf_counter() - start


def raw_copy(dsn: str, job_id: uuid.UUID, rows: list[dict[str, Any]], binary: bool) -> float:
    names = sql.SQL(", ").join(map(sql.Identifier, ("job_id", *COLUMNS)))
    fmt = sql.SQL(" (FORMAT BINARY)" if binary else "")
    statement = sql.SQL("COPY layer_traces ({}) FROM STDIN{}").format(names, fmt)
    types = ["uuid", "int4", "varchar", "varchar", "int8"] + ["float8"] * 6 + ["int8"]
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(statement) as copy:
            if binary:
                copy.set_types(types)
            for r in rows:  # written out by hand, as a raw COPY would be
                copy.write_row(
                    (job_id, r["step"], r["layer"], r["kind"], r["numel"], r["norm"], r["mean"],
                     r["std"], r["min"], r["max"], r["zero_frac"], r["nonfinite"])
                )  # fmt: skip
        conn.commit()
        return time.perf_counter() - start


def count(engine: Engine, job_id: uuid.UUID) -> int:
    with engine.connect() as conn:
        query = text("SELECT count(*) FROM layer_traces WHERE job_id = :j")
        return int(conn.execute(query, {"j": job_id}).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=400, help="rows per put (one hand-off)")
    args = parser.parse_args()

    name = f"trainyard_bench_{os.getpid()}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(DROP.format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = f"{SERVER}/{name}"
    engine = make_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        upgrade(engine.url.render_as_string(hide_password=False), "head")
        sessions = make_session_factory(engine)
        rows = make_rows(args.rows)
        variants: dict[str, Callable[[uuid.UUID], float]] = {
            "writer": lambda job: through_writer(sessions, job, rows, args.chunk),
            "copy-text": lambda job: raw_copy(dsn, job, rows, binary=False),
            "copy-binary": lambda job: raw_copy(dsn, job, rows, binary=True),
        }
        rates: dict[str, list[float]] = {key: [] for key in variants}
        print(f"{len(rows):,} trace rows, {args.rounds} rounds, writer puts of {args.chunk} rows")
        for round_no in range(1, args.rounds + 1):
            line = []
            for key, run in variants.items():
                job = new_job(engine, sessions)
                seconds = run(job)
                if (stored := count(engine, job)) != len(rows):
                    raise SystemExit(f"{key}: stored {stored} rows, expected {len(rows)}")
                rates[key].append(len(rows) / seconds)
                line.append(f"{key} {rates[key][-1]:,.0f}")
            print(f"round {round_no}: " + ", ".join(line) + " rows/s")
        median = {key: statistics.median(values) for key, values in rates.items()}
        for key, value in median.items():
            print(f"median {key:12} {value:>10,.0f} rows/s")
        raw_key = max(("copy-text", "copy-binary"), key=median.__getitem__)
        raw = median[raw_key]
        print(
            f"writer {median['writer']:,.0f} rows/s vs raw COPY {raw:,.0f} rows/s "
            f"({raw_key}): {median['writer'] / raw:.2f}x"
        )
    finally:
        engine.dispose()
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(DROP.format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
