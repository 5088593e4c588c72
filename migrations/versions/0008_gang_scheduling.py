"""Distributed jobs: the gang's columns on jobs, job_nodes, rank_traces

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {
    "gang_id": sa.String(64),
    "gang_size": sa.Integer(),
    "gang_host": sa.String(255),
    "gang_port": sa.Integer(),
    "gang_deadline": sa.DateTime(timezone=True),
    "not_before": sa.DateTime(timezone=True),
}


def upgrade() -> None:
    # Plain ADD COLUMN (no batch mode): the result views depend on jobs, and SQLite adds
    # a nullable column in place.
    for name, kind in COLUMNS.items():
        op.add_column("jobs", sa.Column(name, kind, nullable=True))
    op.create_table(
        "job_nodes",
        sa.Column(
            "job_id", sa.Uuid(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("node_rank", sa.Integer(), primary_key=True),
        sa.Column("gang_id", sa.String(64), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
    )

    op.create_table(
        "rank_traces",
        sa.Column(
            "job_id", sa.Uuid(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("layer", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        sa.Column("numel", sa.BigInteger(), nullable=False),
        sa.Column("norm", sa.Double(), nullable=False),
        *(sa.Column(name, sa.Double(), nullable=True)
          for name in ("mean", "std", "min", "max", "zero_frac")),
        sa.Column("nonfinite", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("kind IN ('forward_pre', 'forward', 'backward')", name="kind"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("rank_traces")
    op.drop_table("job_nodes")
    for name in COLUMNS:
        op.drop_column("jobs", name)
