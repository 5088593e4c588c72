"""result views for SQL users: job_results (one row per job) and epoch_metrics

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 02:00:00

Both views are computed from the metrics table (not from jobs.summary), so they also
describe running, failed and cancelled jobs, whose summary is empty. The README section
"Querying the results database" documents their columns.

The views are not in shared.models metadata; autogenerate compares tables only, so they
never show up as drift. A later migration that batch-alters `jobs` or `metrics` on SQLite
(which rebuilds the table) or changes a referenced column's type on PostgreSQL must drop
these views first and create them again afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("epoch_metrics", "job_results")

# JSON access and timestamp arithmetic are the only dialect differences.
PRESET = {
    "postgresql": "j.spec -> 'model' ->> 'preset'",
    "sqlite": "json_extract(j.spec, '$.model.preset')",
}
HAS_MODEL = {
    "postgresql": "j.spec -> 'model' IS NOT NULL",
    "sqlite": "json_type(j.spec, '$.model') IS NOT NULL",
}
WALL_SECONDS = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM j.finished_at - j.started_at) AS DOUBLE PRECISION)",
    # SQLAlchemy stores SQLite timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC.
    "sqlite": "(julianday(j.finished_at) - julianday(j.started_at)) * 86400.0",
}


def _last(split: str, name: str) -> str:
    """The value of metric split/name at its highest step (the PK index serves it)."""
    return (
        "(SELECT m.value FROM metrics m WHERE m.job_id = j.id"
        f" AND m.split = '{split}' AND m.name = '{name}' ORDER BY m.step DESC LIMIT 1)"
    )


def _aggregate(function: str, column: str, split: str, name: str) -> str:
    return (
        f"(SELECT {function}(m.{column}) FROM metrics m WHERE m.job_id = j.id"
        f" AND m.split = '{split}' AND m.name = '{name}')"
    )


def _job_results(dialect: str) -> str:
    return f"""
CREATE VIEW job_results AS
SELECT
    j.id AS job_id,
    j.owner,
    j.kind,
    j.status,
    CASE WHEN {HAS_MODEL[dialect]} THEN COALESCE({PRESET[dialect]}, 'custom') END AS preset,
    j.created_at,
    j.started_at,
    j.finished_at,
    {WALL_SECONDS[dialect]} AS wall_s,
    {_aggregate("max", "epoch", "train", "epoch_loss")} AS epochs,
    {_aggregate("max", "step", "train", "loss")} AS steps,
    {_last("train", "loss")} AS final_train_loss,
    {_aggregate("max", "value", "val", "accuracy")} AS best_val_accuracy,
    {_last("val", "accuracy")} AS last_val_accuracy,
    {_last("val", "loss")} AS last_val_loss,
    {_last("test", "loss")} AS test_loss,
    {_last("test", "accuracy")} AS test_accuracy,
    j.error
FROM jobs j
"""


# One row per evaluated epoch. Epoch-end rows share the epoch's last step: train/epoch_loss
# and every val/* metric; the learning rate is the last train/lr logged up to that step
# (it is logged only when it changes).
EPOCH_METRICS = """
CREATE VIEW epoch_metrics AS
SELECT
    e.job_id,
    e.epoch,
    e.step,
    e.train_loss,
    e.val_loss,
    e.val_accuracy,
    (SELECT m.value FROM metrics m
      WHERE m.job_id = e.job_id AND m.split = 'train' AND m.name = 'lr' AND m.step <= e.step
      ORDER BY m.step DESC LIMIT 1) AS lr
FROM (
    SELECT
        job_id,
        epoch,
        max(step) AS step,
        max(CASE WHEN split = 'train' THEN value END) AS train_loss,
        max(CASE WHEN split = 'val' AND name = 'loss' THEN value END) AS val_loss,
        max(CASE WHEN split = 'val' AND name = 'accuracy' THEN value END) AS val_accuracy
    FROM metrics
    WHERE (split = 'train' AND name = 'epoch_loss') OR split = 'val'
    GROUP BY job_id, epoch
) e
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in PRESET:
        raise NotImplementedError(
            f"result views are written for PostgreSQL and SQLite, not {dialect}"
        )
    op.execute(_job_results(dialect))
    op.execute(EPOCH_METRICS)


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
