"""Keyword-only data functions. Every job status change goes through a guarded UPDATE here."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Select, Table, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.errors import InvalidTransition, JobNotFound, LeaseLost, NotFound
from shared.models import (
    FINAL_STATUSES,
    Checkpoint,
    Job,
    JobEvent,
    JobStatus,
    LayerTrace,
    Metric,
    utcnow,
)

T = TypeVar("T")  # the row type of a select()

# Rows per INSERT statement: large enough to amortise round trips, small enough for
# SQLite's bound-parameter limit (13 columns x 2000 < 32766).
_CHUNK = 2000


def create_job(
    *,
    session: Session,
    owner: str,
    kind: str,
    spec: dict[str, Any],
    queue: str,
    priority: int = 0,
    source_job_id: uuid.UUID | None = None,
    enqueued_at: datetime | None = None,
) -> Job:
    """Insert a queued job and its 'queued' event (the caller commits before sending)."""
    job = Job(
        enqueued_at=enqueued_at,
        owner=owner,
        kind=kind,
        spec=spec,
        queue=queue,
        priority=priority,
        status=JobStatus.QUEUED,
        source_job_id=source_job_id,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    add_event(session=session, job_id=job.id, kind="queued", message=f"queued on {queue}")
    return job


def get_job(*, session: Session, job_id: uuid.UUID, owner: str | None = None) -> Job:
    """The job, if it exists and (when owner is given) belongs to that owner."""
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise JobNotFound(f"job {job_id} not found")
    return job


def list_jobs(
    *,
    session: Session,
    owner: str,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Job]:
    """Newest first; `before` is the (created_at, id) of the last job of the previous page."""
    query = select(Job).where(Job.owner == owner)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    if before is not None:
        at, last_id = before
        query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last_id)))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def mark_enqueued(*, session: Session, job_id: uuid.UUID) -> datetime:
    """Remember when the job's message was last sent (the sweeper re-sends stale ones)."""
    now = utcnow()
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=now))
    return now


def relax_durability(session: Session) -> None:
    """Let this transaction's commit return before its WAL reaches the disk (PostgreSQL).

    For the rows of an inference job only: a prediction is a short-lived request, and a
    database crash in the next few hundred milliseconds would lose at most that request
    (the client retries), never training results or checkpoints. It saves a WAL flush
    per commit (about 1.5 ms on this machine), three per prediction. Consistency is
    unchanged: the commit is atomic and ordered like any other.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def claim_job(
    *, session: Session, job_id: uuid.UUID, worker: str, lease_seconds: int, max_attempts: int
) -> Job | None:
    """Atomically move a queued (or lease-expired running) job to running for this worker.

    Returns None when another worker holds a live lease or the job is already final, so a
    redelivered message never trains the same job twice at once.
    """
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.QUEUED,
        and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now),
    )
    # One statement: the guarded UPDATE returns the claimed row (RETURNING works on
    # PostgreSQL and SQLite >= 3.35), no second read.
    job = session.scalars(
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .where(Job.attempt < max_attempts)
        .values(
            status=JobStatus.RUNNING,
            worker=worker,
            attempt=Job.attempt + 1,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, now),
        )
        .returning(Job),
        execution_options={"populate_existing": True, "synchronize_session": False},
    ).one_or_none()
    if job is None:
        return None
    add_event(
        session=session,
        job_id=job_id,
        kind="claimed",
        message=f"claimed by {worker} (attempt {job.attempt})",
    )
    return job


def heartbeat(
    *,
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    lease_seconds: int,
    step: int,
    total: int | None,
    epoch: int,
) -> bool:
    """Extend the lease and store progress; returns True when a cancel was requested.

    Raises LeaseLost when this worker no longer holds the job (its lease expired and
    another worker claimed it, or the sweeper ended it): the caller must stop training.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            progress_step=step,
            progress_total=total,
            progress_epoch=epoch,
        )
        .returning(Job.cancel_requested)
    )
    cancel = result.scalar_one_or_none()
    if cancel is None:
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")
    return bool(cancel)


def finish_job(
    *,
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    status: JobStatus,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """running -> succeeded / failed / cancelled, only by the worker holding the claim."""
    if status not in FINAL_STATUSES:
        raise InvalidTransition(f"{status} is not a final status")
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(status=status, summary=summary, error=error, finished_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(f"job {job_id} is not running on {worker}")
    add_event(session=session, job_id=job_id, kind=str(status), message=error or "")


def request_cancel(*, session: Session, job_id: uuid.UUID) -> None:
    """Queued jobs are cancelled at once; running ones stop at their next heartbeat.

    Both are single guarded UPDATEs, so a worker claiming the job at the same moment
    either sees the cancel flag or finds the job already cancelled.
    """
    now = utcnow()
    queued = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now)
    )
    if queued.rowcount != 1:  # type: ignore[attr-defined]
        running = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
        )
        if running.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidTransition(f"job {job_id} has already ended")
    add_event(session=session, job_id=job_id, kind="cancel_requested")


def add_event(
    *,
    session: Session,
    job_id: uuid.UUID,
    kind: str,
    message: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    """Append one lifecycle event."""
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data, at=utcnow()))


def list_events(*, session: Session, job_id: uuid.UUID) -> list[JobEvent]:
    """A job's events, oldest first."""
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    return list(session.scalars(query))


def _insert_ignoring_duplicates(
    session: Session, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Multi-row INSERT ... ON CONFLICT DO NOTHING, so a retried write is a no-op."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    # A multi-row VALUES takes its columns from the first row: give every row all keys.
    keys = {key for row in rows for key in row}
    for start in range(0, len(rows), _CHUNK):
        chunk = [{key: row.get(key) for key in keys} for row in rows[start : start + _CHUNK]]
        session.execute(insert(table).values(chunk).on_conflict_do_nothing())


def record_metrics(*, session: Session, job_id: uuid.UUID, rows: Iterable[dict[str, Any]]) -> None:
    """Write metric points {split, name, step, epoch, value} in one batch."""
    batch = [{**row, "job_id": job_id} for row in rows]
    if batch:
        _insert_ignoring_duplicates(session, Metric.__table__, batch)  # type: ignore[arg-type]


def record_traces(*, session: Session, job_id: uuid.UUID, rows: Iterable[dict[str, Any]]) -> None:
    """Write layer trace rows in one batch."""
    batch = [{**row, "job_id": job_id} for row in rows]
    if batch:
        _insert_ignoring_duplicates(session, LayerTrace.__table__, batch)  # type: ignore[arg-type]


def copy_ignoring_duplicates(
    *,
    session: Session,
    table: Table,
    job_id: uuid.UUID,
    rows: Sequence[Mapping[str, Any]],
    optimistic: bool = True,
) -> bool:
    """PostgreSQL bulk write of `table` rows for one job: binary COPY, duplicates ignored.

    COPY itself cannot skip rows that already exist, and a retried job re-writes the
    steps it had written before. With `optimistic` the rows are first COPYed straight
    into the table inside a savepoint: rows are new almost always, and this is as fast as
    a raw COPY. If any row exists (UniqueViolation) the savepoint is rolled back and the
    rows go through a per-connection temporary staging table (emptied at commit) and one
    INSERT ... SELECT ... ON CONFLICT DO NOTHING, which keeps the write idempotent like
    record_metrics / record_traces. Returns True when duplicates were met, so the caller
    can go straight to staging for the rest of a re-delivered job. Call it once per
    table per transaction (a second staged call re-offers the first call's rows).
    """
    if not rows:
        return False
    known = [col.name for col in table.columns if col.name != "job_id"]
    present: set[str] = set().union(*rows)
    if unknown := present.difference(known):
        raise ValueError(f"{table.name} has no column(s) {', '.join(sorted(unknown))}")
    columns = [name for name in known if name in present]
    if len(columns) > 1 and all(len(row) == len(columns) for row in rows):
        pick = itemgetter(*columns)  # every row has every column: the fast path
        values = [(job_id, *pick(row)) for row in rows]
    else:
        values = [(job_id, *(row.get(name) for name in columns)) for row in rows]

    conn = session.connection()
    oids = _column_oids(conn, table.name)
    types = [oids[name] for name in ["job_id", *columns]]
    names = sql.SQL(", ").join(sql.Identifier(name) for name in ["job_id", *columns])
    target, stage = sql.Identifier(table.name), sql.Identifier(f"_stage_{table.name}")
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cur:
        if optimistic:
            cur.execute("SAVEPOINT trainyard_copy")
            try:
                _copy_rows(cur, target, names, types, values)
                return False
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT trainyard_copy")
        cur.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
            ).format(stage, target)
        )
        _copy_rows(cur, stage, names, types, values)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                target, names, names, stage
            )
        )
    return True


def _copy_rows(
    cur: psycopg.Cursor[Any],
    table: sql.Identifier,
    names: sql.Composable,
    types: list[int],
    values: Iterable[tuple[Any, ...]],
) -> None:
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, names)
    with cur.copy(copy_sql) as copy:
        copy.set_types(types)
        for value in values:
            copy.write_row(value)


def _column_oids(conn: Connection, table: str) -> dict[str, int]:
    """Column name -> type OID (binary COPY needs them), cached on the pooled connection."""
    cache: dict[str, dict[str, int]] = conn.info.setdefault("trainyard_column_oids", {})
    if table not in cache:
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cur:
            cur.execute(
                "SELECT attname, atttypid::int FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
            cache[table] = {name: oid for name, oid in cur.fetchall()}
    return cache[table]


def _step_range(query: Select[T], column: Any, low: int | None, high: int | None) -> Select[T]:
    """Restrict `query` to low <= column <= high (either bound may be open)."""
    if low is not None:
        query = query.where(column >= low)
    if high is not None:
        query = query.where(column <= high)
    return query


def list_metrics(
    *,
    session: Session,
    job_id: uuid.UUID,
    name: str | None = None,
    split: str | None = None,
    from_step: int | None = None,
    to_step: int | None = None,
    limit: int | None = None,
) -> list[Metric]:
    """A job's metric points ordered by name, split, step; step bounds are inclusive."""
    query = select(Metric).where(Metric.job_id == job_id)
    if name:
        query = query.where(Metric.name == name)
    if split:
        query = query.where(Metric.split == split)
    query = _step_range(query, Metric.step, from_step, to_step)
    query = query.order_by(Metric.name, Metric.split, Metric.step).limit(limit)
    return list(session.scalars(query))


def list_traces(
    *,
    session: Session,
    job_id: uuid.UUID,
    layer: str | None = None,
    kind: str | None = None,
    from_step: int | None = None,
    to_step: int | None = None,
    limit: int,
) -> list[LayerTrace]:
    """Trace rows ordered by step then layer; step bounds are inclusive."""
    query = select(LayerTrace).where(LayerTrace.job_id == job_id)
    if layer and any(c in layer for c in "*?"):
        query = query.where(LayerTrace.layer.like(glob_to_like(layer), escape="\\"))
    elif layer:  # no wildcard: an exact (case-sensitive everywhere) match
        query = query.where(LayerTrace.layer == layer)
    if kind:
        query = query.where(LayerTrace.kind == kind)
    query = _step_range(query, LayerTrace.step, from_step, to_step)
    query = query.order_by(LayerTrace.step, LayerTrace.kind, LayerTrace.layer).limit(limit)
    return list(session.scalars(query))


def glob_to_like(glob: str) -> str:
    """A shell glob (* and ?) as an SQL LIKE pattern, with LIKE's own wildcards escaped."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def save_checkpoint(
    *,
    session: Session,
    job_id: uuid.UUID,
    step: int,
    epoch: int,
    tag: str,
    model_state: bytes,
    optimizer_state: bytes | None,
    sha256: str,
) -> Checkpoint:
    """Store one checkpoint; a retried job overwrites nothing, it adds newer rows."""
    ckpt = Checkpoint(
        job_id=job_id,
        step=step,
        epoch=epoch,
        tag=tag,
        model_state=model_state,
        optimizer_state=optimizer_state,
        sha256=sha256,
        size=len(model_state),
        created_at=utcnow(),
    )
    session.add(ckpt)
    session.flush()
    return ckpt


def list_checkpoints(*, session: Session, job_id: uuid.UUID) -> list[Checkpoint]:
    """A job's checkpoints by step (weights are deferred: not loaded here)."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return list(session.scalars(query.order_by(Checkpoint.step, Checkpoint.created_at)))


def _checkpoint_by_ref(query: Select[T], job_id: uuid.UUID, ref: str) -> Select[T]:
    """`query` narrowed to the checkpoint `ref` names: an id, or the newest with a tag."""
    query = query.where(Checkpoint.job_id == job_id)
    if ref in ("final", "epoch", "best"):
        query = query.where(Checkpoint.tag == ref)
    elif ref != "latest":
        try:
            query = query.where(Checkpoint.id == uuid.UUID(ref))
        except ValueError:
            raise NotFound(f"checkpoint {ref!r} not found") from None
    return query.order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc()).limit(1)


def get_checkpoint(*, session: Session, job_id: uuid.UUID, ref: str) -> Checkpoint:
    """A checkpoint by id, or the newest one with tag 'final' / 'epoch' / 'best' ('latest':
    the newest of any tag)."""
    ckpt = session.scalars(_checkpoint_by_ref(select(Checkpoint), job_id, ref)).first()
    if ckpt is None:
        raise NotFound(f"checkpoint {ref!r} not found for job {job_id}")
    return ckpt


def checkpoint_id(*, session: Session, job_id: uuid.UUID, ref: str) -> uuid.UUID:
    """The id `get_checkpoint` would return, without reading the weights."""
    found = session.scalars(_checkpoint_by_ref(select(Checkpoint.id), job_id, ref)).first()
    if found is None:
        raise NotFound(f"checkpoint {ref!r} not found for job {job_id}")
    return found


def jobs_to_resend(*, session: Session, older_than: timedelta, max_attempts: int) -> list[Job]:
    """Jobs whose message may be lost: the sweeper sends "work on job X" again.

    That is queued jobs whose message went out long ago (or never), and running jobs
    whose worker stopped heartbeating while attempts are left: re-sent once right after
    the lease runs out, then again every `older_than` while nobody claims them.
    """
    now = utcnow()
    cutoff = now - older_than
    stale_queued = and_(
        Job.status == JobStatus.QUEUED,
        or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff),
        Job.created_at < cutoff,
    )
    lost_running = and_(
        Job.status == JobStatus.RUNNING,
        Job.lease_expires_at < now,
        Job.attempt < max_attempts,
        Job.cancel_requested.is_(False),
        or_(
            Job.enqueued_at.is_(None),
            Job.enqueued_at < Job.lease_expires_at,
            Job.enqueued_at < cutoff,
        ),
    )
    return list(session.scalars(select(Job).where(or_(stale_queued, lost_running))))


def end_abandoned_jobs(*, session: Session, max_attempts: int) -> dict[str, int]:
    """Running jobs whose lease ran out and that nobody may claim again get a final status.

    A cancel request makes them cancelled; having used every attempt makes them failed.
    Each is one guarded UPDATE on the expired lease, so a job that just heartbeated stays.
    """
    now = utcnow()
    expired = and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    outcomes = (
        (JobStatus.CANCELLED, Job.cancel_requested.is_(True), "cancelled; its worker was gone"),
        (
            JobStatus.FAILED,
            Job.attempt >= max_attempts,
            f"worker lost {max_attempts} times (no heartbeat); giving up",
        ),
    )
    counts: dict[str, int] = {}
    for status, condition, message in outcomes:
        ids = session.scalars(
            update(Job)
            .where(expired, condition)
            .values(
                status=status, finished_at=now, error=None if status == "cancelled" else message
            )
            .returning(Job.id)
        ).all()
        for job_id in ids:
            add_event(session=session, job_id=job_id, kind=str(status), message=message)
        counts[str(status)] = len(ids)
    return counts


def metric_overview(*, session: Session, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """Per (split, name) series: point count, the last point, and the best point.

    Best is the lowest value for names ending in 'loss' and the highest for names ending
    in 'accuracy' (other series have none). Non-finite values are never best: the bounds
    leave out NaN (greater than every number on PostgreSQL, text on SQLite) and inf.
    """
    where = Metric.job_id == job_id
    groups = session.execute(
        select(Metric.split, Metric.name, func.count(), func.max(Metric.step))
        .where(where)
        .group_by(Metric.split, Metric.name)
        .order_by(Metric.split, Metric.name)
    ).all()
    series = []
    for split, name, count, last_step in groups:
        same = (where, Metric.split == split, Metric.name == name)
        last = session.execute(
            select(Metric.step, Metric.epoch, Metric.value).where(*same, Metric.step == last_step)
        ).one()
        best = None
        order = {"loss": Metric.value.asc(), "accuracy": Metric.value.desc()}
        kind = next((k for k in order if name.endswith(k)), None)
        if kind is not None:
            best = session.execute(
                select(Metric.step, Metric.epoch, Metric.value)
                .where(*same, Metric.value >= -1e308, Metric.value <= 1e308)
                .order_by(order[kind], Metric.step.asc())
                .limit(1)
            ).first()
        series.append(
            {
                "split": split,
                "name": name,
                "points": int(count),
                "last": dict(last._mapping),
                "best": dict(best._mapping) if best is not None else None,
            }
        )
    return series
