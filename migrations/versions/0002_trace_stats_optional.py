"""trace statistics optional (hooks.stats; nonfinite uncounted) and param_grad update ratio

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

OPTIONAL = ("mean", "std", "min", "max", "zero_frac", "nonfinite")


def upgrade() -> None:
    with op.batch_alter_table("layer_traces") as batch:
        for column in OPTIONAL:
            kind = sa.BigInteger() if column == "nonfinite" else sa.Double()
            batch.alter_column(column, existing_type=kind, nullable=True)
        batch.add_column(sa.Column("update_ratio", sa.Double(), nullable=True))


def downgrade() -> None:
    # Statistics that were not recorded become NaN (and uncounted values 0) again.
    for column in OPTIONAL:
        filler = "0" if column == "nonfinite" else "'NaN'"
        op.execute(f"UPDATE layer_traces SET {column} = {filler} WHERE {column} IS NULL")
    with op.batch_alter_table("layer_traces") as batch:
        batch.drop_column("update_ratio")
        for column in OPTIONAL:
            kind = sa.BigInteger() if column == "nonfinite" else sa.Double()
            batch.alter_column(column, existing_type=kind, nullable=False)
