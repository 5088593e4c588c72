"""Alembic: an empty database upgraded to head matches the models exactly, and downgrades.

Both dialects run the same revisions (PostgreSQL for a cluster, SQLite for the embedded
default), including the result views of 0003, whose SQL differs per dialect.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from cli.migrate import alembic_config, upgrade
from shared import repository
from shared.db import make_engine, make_session_factory, session_scope
from shared.models import Base, LayerTrace, Metric
from tests.support.servers import create_database, drop_database

TABLES = {"jobs", "metrics", "layer_traces", "checkpoints", "job_events", "api_tokens"}
VIEWS = {"job_results", "epoch_metrics"}  # 0003; not in the models' metadata


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _schema(url: str) -> tuple[set[str], set[str]]:
    """(table names, view names) of the database at `url`."""
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return set(inspector.get_table_names()), set(inspector.get_view_names())
    finally:
        engine.dispose()


def _views_answer(url: str) -> None:
    """Each view runs (on an empty database: no rows)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for view in sorted(VIEWS):
                assert conn.execute(text(f"SELECT * FROM {view}")).all() == []
    finally:
        engine.dispose()


def _upgrade_downgrade_round_trip(url: str) -> None:
    upgrade(url, "head")
    assert _drift(url) == []  # the views do not count as drift
    tables, views = _schema(url)
    assert tables >= TABLES and views == VIEWS
    _views_answer(url)
    command.downgrade(alembic_config(url), "0002")
    assert _schema(url)[1] == set()
    upgrade(url, "head")
    assert _schema(url)[1] == VIEWS
    command.downgrade(alembic_config(url), "base")
    assert _schema(url) == ({"alembic_version"}, set())


def test_postgres_upgrade_matches_models_and_downgrades() -> None:
    name = f"trainyard_migration_check_{os.getpid()}"
    url = create_database(name)
    try:
        _upgrade_downgrade_round_trip(url)
    finally:
        drop_database(name)


def test_sqlite_default_upgrades_to_head_and_downgrades(tmp_path: Path) -> None:
    _upgrade_downgrade_round_trip(f"sqlite:///{tmp_path / 'embedded.db'}")


def _nan_round_trip(url: str) -> None:
    upgrade(url, "head")
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        with session_scope(sessions) as session:
            job = repository.create_job(
                session=session, owner="o", kind="train", spec={}, queue="train"
            )
            metrics = [
                {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": v}
                for s, v in ((1, 1.5), (2, math.nan), (3, math.inf))
            ]
            repository.record_metrics(session=session, job_id=job.id, rows=metrics)
            trace = {"step": 2, "layer": "fc", "kind": "backward", "numel": 4, "norm": math.nan}
            repository.record_traces(session=session, job_id=job.id, rows=[trace])
        with sessions() as session:
            values = session.scalars(select(Metric.value).order_by(Metric.step)).all()
            norm = session.scalars(select(LayerTrace.norm)).one()
        assert values[0] == 1.5 and math.isnan(values[1]) and values[2] == math.inf
        assert math.isnan(norm)
    finally:
        engine.dispose()


def test_nan_and_inf_are_kept_on_postgres_and_sqlite(tmp_path: Path) -> None:
    # A diverging job's last rows hold NaN; SQLite would bind NaN as NULL and refuse them.
    _nan_round_trip(f"sqlite:///{tmp_path / 'nan.db'}")
    name = f"trainyard_nan_check_{os.getpid()}"
    try:
        _nan_round_trip(create_database(name))
    finally:
        drop_database(name)


def test_sqlite_upgrade_keeps_the_rows_of_a_rebuilt_table(tmp_path: Path) -> None:
    # 0011 rebuilds `jobs` on SQLite (its status CHECK); dropping the old table must not
    # cascade into the metrics, events and checkpoints that reference it.
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    upgrade(url, "0010")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner, kind, status, spec, queue, priority, attempt, "
                    "cancel_requested, preempt_requested, progress_step, progress_epoch, "
                    "created_at) "
                    "VALUES ('0123456789abcdef0123456789abcdef', 'o', 'train', 'succeeded', '{}', "
                    "'train', 5, 0, 0, 0, 3, 1, '2026-12-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO metrics (job_id, split, name, step, epoch, value) "
                    "VALUES ('0123456789abcdef0123456789abcdef', 'train', 'loss', 1, 1, 0.5)"
                )
            )
            conn.execute(text(
                "INSERT INTO job_events (job_id, at, kind, message) "
                "VALUES ('0123456789abcdef0123456789abcdef', '2026-12-01 00:00:00', 'queued', '')"
            ))  # fmt: skip
        upgrade(url, "head")
        with engine.connect() as conn:
            for table in ("jobs", "metrics", "job_events"):
                assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1, table
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        command.downgrade(alembic_config(url), "0010")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM metrics")).scalar() == 1
    finally:
        engine.dispose()
