"""preemption: jobs.preempt_requested, the flag a running job's heartbeat reads

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A plain ALTER TABLE on both dialects: SQLite's batch mode would copy the jobs table,
# which the result views of 0003 read.


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("preempt_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN preempt_requested")
