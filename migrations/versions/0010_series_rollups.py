"""Series rollups: per-bucket first / lowest / highest of every metric and trace statistic,
at doubling bucket widths, so a million-step series reads in milliseconds; rollup_marks
records how far each job is rolled up and thinned by retention (hooks.keep_raw_steps)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 20:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rollup_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("stat", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_step", sa.Integer(), nullable=False),
        sa.Column("low", sa.Double(), nullable=False),
        sa.Column("low_step", sa.Integer(), nullable=False),
        sa.Column("high", sa.Double(), nullable=False),
        sa.Column("high_step", sa.Integer(), nullable=False),
    ]


def _job_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["job_id"], ["jobs.id"], name=op.f(f"fk_{table}_job_id_jobs"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "trace_rollups",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("layer", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        *_rollup_columns(),
        _job_fk("trace_rollups"),
        sa.PrimaryKeyConstraint(
            "job_id", "layer", "kind", "stat", "level", "bucket", name=op.f("pk_trace_rollups")
        ),
    )
    op.create_table(
        "metric_rollups",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        *_rollup_columns(),
        _job_fk("metric_rollups"),
        sa.PrimaryKeyConstraint(
            "job_id", "split", "name", "stat", "level", "bucket", name=op.f("pk_metric_rollups")
        ),
    )
    op.create_table(
        "rollup_marks",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("rolled_below", sa.Integer(), nullable=False),
        sa.Column("pruned_below", sa.Integer(), nullable=False),
        _job_fk("rollup_marks"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_rollup_marks")),
    )


def downgrade() -> None:
    op.drop_table("rollup_marks")
    op.drop_table("metric_rollups")
    op.drop_table("trace_rollups")
