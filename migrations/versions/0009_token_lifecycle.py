"""Token lifecycle: scopes and expiry on api_tokens; the audit_events log

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_tokens",
        sa.Column("scopes", sa.String(64), nullable=False, server_default="read,submit"),
    )
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True)))
    op.create_table(
        "audit_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
            primary_key=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("token_prefix", sa.String(12)),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("remote_addr", sa.String(64)),
        sa.Column("detail", sa.Text(), nullable=False),
    )  # fmt: skip
    op.create_index("ix_audit_events_owner_at", "audit_events", ["owner", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_owner_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_column("api_tokens", "expires_at")
    op.drop_column("api_tokens", "scopes")
