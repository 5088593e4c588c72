"""Idempotency-Key: jobs.idempotency_key (unique per owner) and the request's sha256

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain ALTER TABLE and CREATE INDEX on both dialects (no SQLite batch copy of the jobs
# table, which the result views of 0003 read).
COLUMNS = ("idempotency_key", "request_sha256")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.add_column("jobs", sa.Column("request_sha256", sa.String(64), nullable=True))
    op.create_index(
        "ix_jobs_owner_idempotency_key", "jobs", ["owner", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_idempotency_key", table_name="jobs")
    for column in COLUMNS:
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
