"""resumable checkpoints: checkpoints.resume_state and the periodic "step" tag

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("resume_state", sa.LargeBinary(), nullable=True))
        batch.drop_constraint(op.f("ck_checkpoints_tag"), type_="check")
        batch.create_check_constraint("tag", "tag IN ('epoch', 'step', 'best', 'final')")


def downgrade() -> None:
    # Periodic checkpoints did not exist before: they go, resume states with them.
    op.execute("DELETE FROM checkpoints WHERE tag = 'step'")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_constraint(op.f("ck_checkpoints_tag"), type_="check")
        batch.create_check_constraint("tag", "tag IN ('epoch', 'best', 'final')")
        batch.drop_column("resume_state")
