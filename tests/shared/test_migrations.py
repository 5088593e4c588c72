"""Alembic: an empty PostgreSQL database upgraded to head matches the models exactly."""

from __future__ import annotations

import os
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cli.migrate import alembic_config, upgrade
from shared.db import make_engine
from shared.models import Base
from tests.conftest import create_database, drop_database

TABLES = {"jobs", "metrics", "layer_traces", "checkpoints", "job_events", "api_tokens"}


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def test_postgres_upgrade_matches_models_and_downgrades() -> None:
    name = f"trainyard_migration_check_{os.getpid()}"
    url = create_database(name)
    try:
        upgrade(url, "head")
        assert _drift(url) == []
        engine = make_engine(url)
        names = set(inspect(engine).get_table_names())
        engine.dispose()
        assert names >= TABLES
        from alembic import command

        command.downgrade(alembic_config(url), "base")
        engine = make_engine(url)
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        engine.dispose()
    finally:
        drop_database(name)


def test_sqlite_default_upgrades_to_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url, "head")
    assert _drift(url) == []
