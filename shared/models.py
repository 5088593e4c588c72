"""SQLAlchemy 2.0 models: the database row is the truth about a job.

Column and table names are part of the public SQL interface (README "Querying the results
database"): rename them only with a migration and a README change.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    Uuid,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp in the database is UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC-aware in Python, also on SQLite (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use shared.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Float(TypeDecorator[float]):
    """A double that keeps NaN on SQLite too.

    PostgreSQL's double precision stores NaN and the infinities; SQLite stores infinities
    but binds NaN as NULL, which a NOT NULL column refuses (a diverging job's last rows
    were lost). There NaN is stored as the text 'NaN' (a REAL column keeps text that is
    not a number) and read back as a float; comparisons in SQL skip it, as NaN should be.
    """

    impl = Double
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # Replaces the composed processor: Double's own float() would turn "NaN" back.
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: Any) -> Any:
            if value is None:
                return None
            value = float(value)
            return "NaN" if math.isnan(value) else value

        return process

    def process_result_value(self, value: float | str | None, dialect: Dialect) -> float | None:
        return float(value) if isinstance(value, str) else value


# JSONB on PostgreSQL so SQL users get ->> and indexes; plain JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A sweep trial stopped early: by the sweep's pruner (ASHA) or a gradient rule.
    PRUNED = "pruned"


FINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED}
)


class Job(Base):
    """A training or inference job and everything the API reports about its state."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("kind IN ('train', 'infer')", name="kind"),
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'pruned')",
            name="status",
        ),
        Index("ix_jobs_owner_created", "owner", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        # A retried submission with the same Idempotency-Key finds the first job.
        Index("ix_jobs_owner_idempotency_key", "owner", "idempotency_key", unique=True),
        # The claim order: priority, then fair share between owners (leases.claim_next).
        Index("ix_jobs_queue_status_priority", "queue", "status", "priority", "created_at"),
        Index("ix_jobs_owner_status", "owner", "status"),
        Index("ix_jobs_owner_started", "owner", "started_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    queue: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=5)  # 0-9; 9 runs first
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    # Checkpoint, hand back to the queue, resume later (API preempt); not a crash.
    preempt_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A job over several nodes (train.distributed.nodes) forming its gang: the claiming
    # worker (node 0) serves the rendezvous store at gang_host:gang_port; other workers
    # join (job_nodes) until gang_deadline. not_before: claimable again from then (a gang
    # that did not fill waits before it holds a worker again).
    gang_id: Mapped[str | None] = mapped_column(String(64), default=None)
    gang_size: Mapped[int | None] = mapped_column(Integer, default=None)
    gang_host: Mapped[str | None] = mapped_column(String(255), default=None)
    gang_port: Mapped[int | None] = mapped_column(Integer, default=None)
    gang_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    progress_epoch: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL")
    )
    # A trial of this sweep (sweep_trials names which one and its parameters).
    sweep_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("sweeps.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SweepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every trial ended, at least one with a value
    FAILED = "failed"  # every trial ended, none with a value
    CANCELLED = "cancelled"


class Sweep(Base):
    """A hyperparameter search: a base job spec, a search space, and an Optuna study
    (its own tables in the `optuna` schema) that proposes the trials."""

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')", name="status"),
        Index("ix_sweeps_owner_created", "owner", "created_at"),
        Index("ix_sweeps_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default=SweepStatus.RUNNING)
    # The sweep request as checked (base spec with defaults, space, method, early_stop...).
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    study_name: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=5)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    best_trial: Mapped[int | None] = mapped_column(Integer, default=None)
    best_value: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The controller's last pass: the sweeper sends another when it is old (a lost message).
    ticked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class TrialState(StrEnum):
    RUNNING = "running"  # its job is queued or running
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INVALID = "invalid"  # the proposed spec was refused as a submission would be; not run


class SweepTrial(Base):
    """One trial of a sweep: the parameters Optuna proposed and the job that ran them."""

    __tablename__ = "sweep_trials"
    __table_args__ = (
        CheckConstraint(
            "state IN ('running', 'complete', 'pruned', 'failed', 'cancelled', 'invalid')",
            name="state",
        ),
        Index("ix_sweep_trials_job", "job_id"),
    )

    sweep_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # the Optuna trial number
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16), default=TrialState.RUNNING)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    stop_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Metric(Base):
    """One scalar per (job, split, name, step); re-writing the same point on retry is a no-op."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "name", "step"),)

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    split: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int | None] = mapped_column(Integer)
    # NaN and inf are stored as such (see Float); the API spells them as strings.
    value: Mapped[float] = mapped_column(Float)


class TraceStats:
    """The statistics of one hooked tensor, as layer_traces and rank_traces store them."""

    numel: Mapped[int] = mapped_column(BigInteger)
    norm: Mapped[float] = mapped_column(Float)
    # NULL: the statistic was not selected in the job's hooks.stats.
    mean: Mapped[float | None] = mapped_column(Float)
    std: Mapped[float | None] = mapped_column(Float)
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    zero_frac: Mapped[float | None] = mapped_column(Float)
    nonfinite: Mapped[int | None] = mapped_column(BigInteger)  # NULL: not counted


class LayerTrace(TraceStats, Base):
    """Statistics of one hooked tensor: a layer's output gradient, a parameter's gradient, ...

    The primary key (job_id, step, layer, kind) serves "all layers at one step"; the
    second index serves "one layer over time".
    """

    __tablename__ = "layer_traces"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('forward_pre', 'forward', 'backward', 'param_grad', 'weights')", name="kind"
        ),
        Index("ix_layer_traces_job_layer_kind_step", "job_id", "layer", "kind", "step"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    layer: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    update_ratio: Mapped[float | None] = mapped_column(Float)  # param_grad: ||dw|| / ||w||
    histogram: Mapped[list[float] | None] = mapped_column(JSONType)


class RankTrace(TraceStats, Base):
    """A distributed job's rank-local statistics (hooks.per_rank): one rank's share of a
    layer's input, output or output gradient at a logged step. layer_traces holds the
    whole batch's; these find the rank whose data or hardware misbehaves."""

    __tablename__ = "rank_traces"
    __table_args__ = (
        CheckConstraint("kind IN ('forward_pre', 'forward', 'backward')", name="kind"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    layer: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)


class Rollup:
    """One statistic of one series over a bucket of steps, for reading long series fast.

    Level 0 buckets hold BUCKET_STEPS (100) steps: bucket b covers steps [100 b, 100 b + 100);
    each level up doubles the width (level k: 100 * 2^k steps). A bucket is written once
    every step in it is committed, and only then. `first_step` is the bucket's first step
    holding a value of `stat`; `low` / `high` its lowest and highest value (NaN counts as
    highest) and `low_step` / `high_step` the earliest steps holding them. Raw rows that a
    level-0 rollup names are never removed by retention (hooks.keep_raw_steps).
    """

    stat: Mapped[str] = mapped_column(String(16))
    level: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)  # steps with a value (after retention: kept)
    first_step: Mapped[int] = mapped_column(Integer)
    low: Mapped[float] = mapped_column(Float)
    low_step: Mapped[int] = mapped_column(Integer)
    high: Mapped[float] = mapped_column(Float)
    high_step: Mapped[int] = mapped_column(Integer)


class TraceRollup(Rollup, Base):
    """Rollups of layer_traces: one row per (layer, kind, stat, level, bucket)."""

    __tablename__ = "trace_rollups"
    __table_args__ = (PrimaryKeyConstraint("job_id", "layer", "kind", "stat", "level", "bucket"),)

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))


class MetricRollup(Rollup, Base):
    """Rollups of metrics: one row per (split, name, level, bucket); `stat` is 'value'."""

    __tablename__ = "metric_rollups"
    __table_args__ = (PrimaryKeyConstraint("job_id", "split", "name", "stat", "level", "bucket"),)

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))


class RollupMark(Base):
    """How far a job's series are rolled up and its raw trace rows thinned by retention:
    every step below `rolled_below` is in the rollups; below `pruned_below` only the raw
    trace rows that level-0 rollups name are kept."""

    __tablename__ = "rollup_marks"

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    rolled_below: Mapped[int] = mapped_column(Integer, default=0)
    pruned_below: Mapped[int] = mapped_column(Integer, default=0)


class Checkpoint(Base):
    """A model state_dict (safetensors) plus optimizer state, taken at an epoch end ("epoch"),
    every N steps or seconds ("step"), on improvement ("best") or at the end ("final").

    `resume_state` (epoch and step checkpoints) holds what a fit needs besides weights and
    optimizer state to continue exactly from `step` (worker/training/resume.py).
    """

    __tablename__ = "checkpoints"
    __table_args__ = (
        CheckConstraint("tag IN ('epoch', 'step', 'best', 'final')", name="tag"),
        Index("ix_checkpoints_job_step", "job_id", "step"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    tag: Mapped[str] = mapped_column(String(16))
    model_state: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    optimizer_state: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    resume_state: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobEvent(Base):
    """Append-only lifecycle log: queued, claimed by X, failed because Y, ..."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_at", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class JobLog(Base):
    """A line a worker logged while it ran the job (worker.job_log): training prints,
    warnings, errors as their first line only (the traceback stays in the worker's log)."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    level: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(100))
    line: Mapped[str] = mapped_column(Text)


class JobNode(Base):
    """A worker that joined a multi-node job's gang: node 0 is the claiming worker."""

    __tablename__ = "job_nodes"

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    node_rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    gang_id: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str] = mapped_column(String(255))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token, stored as its sha256 only; the plaintext is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the token may do: read (GET), submit (POST / DELETE on the owner's jobs);
    # admin tokens (is_admin) also manage tokens.
    scopes: Mapped[str] = mapped_column(
        String(64), default="read,submit", server_default="read,submit"
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # NULL: never


class AuditEvent(Base):
    """Who did what security-relevant thing, when: failed authentications, token changes,
    checkpoint downloads, cancels, deletions. Append-only; queried with SQL."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_owner_at", "owner", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(64))  # NULL: no valid token
    token_prefix: Mapped[str | None] = mapped_column(String(12))
    target: Mapped[str] = mapped_column(String(255), default="")
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
