"""Priorities and fair share: the indexes the claim order reads, priority 5 by default

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> columns. A free worker takes the queued job of its queue with the highest
# priority, then of the owner with the fewest running jobs, then of the owner whose last
# job started longest ago, then the oldest (shared/repository/leases.claim_next).
INDEXES = {
    "ix_jobs_queue_status_priority": ["queue", "status", "priority", "created_at"],
    "ix_jobs_owner_status": ["owner", "status"],
    "ix_jobs_owner_started": ["owner", "started_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "jobs", columns)
    # Until now nobody could set a priority and every row holds 0; 5 is the new default
    # (0-9), so older queued jobs keep their place among new ones.
    op.execute("UPDATE jobs SET priority = 5 WHERE priority = 0")


def downgrade() -> None:
    op.execute("UPDATE jobs SET priority = 0")
    for name in INDEXES:
        op.drop_index(name, table_name="jobs")
