"""trace statistics optional (hooks.stats) and the update ratio of param_grad rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 00:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPTIONAL = ("mean", "std", "min", "max", "zero_frac")


def upgrade() -> None:
    with op.batch_alter_table("layer_traces") as batch:
        for column in OPTIONAL:
            batch.alter_column(column, existing_type=sa.Double(), nullable=True)
        batch.add_column(sa.Column("update_ratio", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("layer_traces") as batch:
        batch.drop_column("update_ratio")
        for column in OPTIONAL:
            batch.alter_column(column, existing_type=sa.Double(), nullable=False)
