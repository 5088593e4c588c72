"""Sweeps: sweeps and sweep_trials, jobs.sweep_id, the 'pruned' job status, and the
`optuna` schema that holds the Optuna study tables on PostgreSQL

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:00:00

Optuna's RDB storage creates its own tables (and its own `alembic_version`, which would
collide with ours in one schema): on PostgreSQL they live in the schema `optuna` of the
same database; the embedded SQLite keeps them in a file beside the database's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "'queued', 'running', 'succeeded', 'failed', 'cancelled'"
NEW_STATUSES = f"{OLD_STATUSES}, 'pruned'"


def _views() -> ModuleType:
    """Migration 0003, which creates the result views that depend on `jobs`."""
    path = Path(__file__).with_name("0003_result_views.py")
    spec = importlib.util.spec_from_file_location("trainyard_migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _alter_jobs(statuses: str, *, add_sweep: bool) -> None:
    """Swap the status CHECK and add or drop jobs.sweep_id. SQLite rebuilds the table
    (batch mode), so the views over it are dropped first and made again afterwards."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    views = _views()
    if sqlite:
        views.downgrade()
    with op.batch_alter_table("jobs", recreate="always" if sqlite else "never") as batch:
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint("status", f"status IN ({statuses})")
        if add_sweep:
            batch.add_column(sa.Column("sweep_id", sa.Uuid(), nullable=True))
            batch.create_foreign_key(
                op.f("fk_jobs_sweep_id_sweeps"), "sweeps", ["sweep_id"], ["id"], ondelete="SET NULL"
            )
            batch.create_index("ix_jobs_sweep_id", ["sweep_id"])
        else:
            batch.drop_index("ix_jobs_sweep_id")
            batch.drop_constraint(op.f("fk_jobs_sweep_id_sweeps"), type_="foreignkey")
            batch.drop_column("sweep_id")
    if sqlite:
        views.upgrade()


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SCHEMA IF NOT EXISTS optuna")
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.Column("study_name", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("best_trial", sa.Integer()),
        sa.Column("best_value", sa.Double()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ticked_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cancelled')", name="status"
        ),
    )  # fmt: skip
    op.create_index("ix_sweeps_owner_created", "sweeps", ["owner", "created_at"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    op.create_table(
        "sweep_trials",
        sa.Column("sweep_id", sa.Uuid(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Uuid(), sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("params", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Double()),
        sa.Column("stop_reason", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "state IN ('running', 'complete', 'pruned', 'failed', 'cancelled', 'invalid')",
            name="state",
        ),
    )  # fmt: skip
    op.create_index("ix_sweep_trials_job", "sweep_trials", ["job_id"])
    _alter_jobs(NEW_STATUSES, add_sweep=True)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'pruned'")
    _alter_jobs(OLD_STATUSES, add_sweep=False)
    op.drop_index("ix_sweep_trials_job", table_name="sweep_trials")
    op.drop_table("sweep_trials")
    op.drop_index("ix_sweeps_status", table_name="sweeps")
    op.drop_index("ix_sweeps_owner_created", table_name="sweeps")
    op.drop_table("sweeps")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SCHEMA IF EXISTS optuna CASCADE")
