"""What a job's live stream sends next: its lifecycle events, progress, metric points and
thinned trace rows after a cursor, read from the database in short transactions.

Every item carries the cursor that follows it, so a client that reconnects with the last
cursor it saw (SSE's Last-Event-ID) gets no gap and no duplicate:

- events and log lines go by their id; one younger than EVENT_SETTLE_SECONDS is held
  back while the job runs, so one that commits late (another process's transaction) is
  not skipped;
- metric and trace rows go by step, and only up to the row writer's horizon: the writer
  commits rows in step order, so once a row of step s is committed, every row of the
  steps before s is. A resumed job rewrites the steps after its checkpoint, identically;
  the cursor skips what the client already has.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.jsonvalues import json_float
from shared.models import FINAL_STATUSES, Job, JobEvent, JobLog, LayerTrace, Metric, utcnow

EVENT_SETTLE_SECONDS = 1.0
# The worker writes its last log lines after the outcome (worker.job_log flushes at the
# end of the job): a stream ends only once the job has been over this long.
ENDED_SETTLE_SECONDS = 2.0
MAX_PART = 2**62  # a cursor part past any id or step (and within a BIGINT)
MAX_STEPS_PER_READ = 500  # metric steps per read; the next read goes on from there
TRACE_KINDS = ("param_grad", "backward")  # what a live gradient view draws


@dataclass(frozen=True)
class Cursor:
    """How far a client has been sent: the last event id, metric step, trace step and
    log line id."""

    event: int = 0
    metric: int = 0
    trace: int = 0
    log: int = 0

    def __str__(self) -> str:
        return f"{self.event}.{self.metric}.{self.trace}.{self.log}"

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        """A cursor from Last-Event-ID; a missing or malformed one starts from the start.
        Three parts (a cursor from before log lines were streamed) start the log over."""
        parts = (raw or "").split(".")
        if len(parts) == 3:
            parts.append("0")
        try:
            event, metric, trace, log = (int(part) for part in parts)
        except ValueError:
            return cls()
        return cls(*(min(max(part, 0), MAX_PART) for part in (event, metric, trace, log)))

    def merged(self, other: Cursor) -> Cursor:
        """Each part the further of the two: where a client is after it was sent an item
        read from another cursor (a job's shared reader, api.feed_hub)."""
        return Cursor(*(max(a, b) for a, b in zip(astuple(self), astuple(other), strict=True)))

    def but(self, **changes: int) -> Cursor:
        """This cursor with some parts moved on."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Item:
    """One thing to send: its kind (the SSE event name), its data, the cursor after it."""

    kind: str
    data: dict[str, Any]
    cursor: Cursor

    @cached_property
    def text(self) -> str:
        """The data as one line of JSON, encoded once however many streams send it."""
        return json.dumps(self.data, separators=(",", ":"))


@dataclass(frozen=True)
class Read:
    """One read of a job's feed: the items after the cursor, and the job's state."""

    items: list[Item]
    status: str
    progress: dict[str, Any]
    final: bool  # the job has ended and every row it wrote was read


def read_feed(session: Session, job_id: uuid.UUID, cursor: Cursor) -> Read | None:
    """What follows `cursor` for this job; None when the job is gone. Every trace step is
    read: a stream thins them for its client (api.routes.stream.thin)."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    ended = job.status in FINAL_STATUSES
    # A worker's last log lines (and a late event) may commit just after the outcome:
    # events and lines settle until the job has been over for ENDED_SETTLE_SECONDS.
    settled = ended and (
        job.finished_at is None
        or job.finished_at < utcnow() - timedelta(seconds=ENDED_SETTLE_SECONDS)
    )
    items = _events(session, job_id, cursor, settled)
    last = items[-1].cursor if items else cursor
    metric_items, last = _metrics(session, job_id, last, ended)
    items += metric_items
    trace_items, last = _traces(session, job_id, last, ended)
    items += trace_items
    items += _logs(session, job_id, last, settled)
    progress = {
        "step": job.progress_step, "total_steps": job.progress_total,
        "epoch": job.progress_epoch, "status": job.status,
    }  # fmt: skip
    # A settled job's read takes every event and line after the cursor, so a read that
    # found nothing has sent everything.
    done = settled and not items
    return Read(items=items, status=job.status, progress=progress, final=done)


def _events(session: Session, job_id: uuid.UUID, cursor: Cursor, ended: bool) -> list[Item]:
    def data(event: JobEvent) -> dict[str, Any]:
        return {"id": event.id, "at": event.at.isoformat(), "kind": event.kind,
                "message": event.message, "data": event.data}  # fmt: skip

    return _appended(session, JobEvent, job_id, cursor, ended, ("lifecycle", "event", data))


def _logs(session: Session, job_id: uuid.UUID, cursor: Cursor, ended: bool) -> list[Item]:
    def data(row: JobLog) -> dict[str, Any]:
        return {"id": row.id, "at": row.at.isoformat(), "level": row.level,
                "source": row.source, "line": row.line}  # fmt: skip

    return _appended(session, JobLog, job_id, cursor, ended, ("logs", "log", data))


def _appended(
    session: Session,
    model: Any,
    job_id: uuid.UUID,
    cursor: Cursor,
    ended: bool,
    as_item: tuple[str, str, Callable[[Any], dict[str, Any]]],
) -> list[Item]:
    """Rows of an append-only table (events, log lines) after the cursor's part for it,
    by id; while the job runs, only rows EVENT_SETTLE_SECONDS old (see the module's doc)."""
    kind, part, data = as_item
    query = select(model).where(model.job_id == job_id, model.id > getattr(cursor, part))
    if not ended:
        query = query.where(model.at < utcnow() - timedelta(seconds=EVENT_SETTLE_SECONDS))
    items = []
    for row in session.scalars(query.order_by(model.id).limit(200)):
        cursor = cursor.but(**{part: row.id})
        items.append(Item(kind, data(row), cursor))
    return items


def _horizon(session: Session, model: Any, job_id: uuid.UUID, ended: bool) -> int:
    """The last step whose rows are all committed (see the module's doc)."""
    top = session.scalar(select(func.max(model.step)).where(model.job_id == job_id))
    if top is None:
        return 0
    return int(top) if ended else int(top) - 1


def _metrics(
    session: Session, job_id: uuid.UUID, cursor: Cursor, ended: bool
) -> tuple[list[Item], Cursor]:
    horizon = _horizon(session, Metric, job_id, ended)
    if horizon <= cursor.metric:
        return [], cursor
    upto = min(horizon, cursor.metric + MAX_STEPS_PER_READ)
    rows = session.execute(
        select(Metric.step, Metric.epoch, Metric.split, Metric.name, Metric.value)
        .where(Metric.job_id == job_id, Metric.step > cursor.metric, Metric.step <= upto)
        .order_by(Metric.step, Metric.split, Metric.name)
    ).all()
    by_step: dict[int, dict[str, Any]] = {}
    for step, epoch, split, name, value in rows:
        point = by_step.setdefault(step, {"step": step, "epoch": epoch, "values": {}})
        point["values"][f"{split}/{name}"] = json_float(value)
    items = []
    for step, point in sorted(by_step.items()):
        cursor = cursor.but(metric=step)
        items.append(Item("metrics", point, cursor))
    # Steps without rows up to `upto` are passed too: the next read starts after them.
    return items, cursor.but(metric=max(cursor.metric, upto))


def _traces(
    session: Session, job_id: uuid.UUID, cursor: Cursor, ended: bool
) -> tuple[list[Item], Cursor]:
    horizon = _horizon(session, LayerTrace, job_id, ended)
    if horizon <= cursor.trace:
        return [], cursor
    upto = min(horizon, cursor.trace + MAX_STEPS_PER_READ)
    norms: dict[int, dict[str, Any]] = defaultdict(dict)
    for step, layer, kind, norm in session.execute(
        select(LayerTrace.step, LayerTrace.layer, LayerTrace.kind, LayerTrace.norm).where(
            LayerTrace.job_id == job_id, LayerTrace.step > cursor.trace,
            LayerTrace.step <= upto, LayerTrace.kind.in_(TRACE_KINDS),
        )
    ):  # fmt: skip
        norms[step][f"{kind}:{layer}"] = json_float(norm)
    items = []
    for step in sorted(norms):
        cursor = cursor.but(trace=step)
        items.append(Item("traces", {"step": step, "norms": norms[step]}, cursor))
    return items, cursor.but(trace=max(cursor.trace, upto))


def within_tip(session: Session, job_id: uuid.UUID, cursor: Cursor) -> Cursor:
    """`cursor` with no part past what the job has written: a client's cursor from another
    database, or made up, would otherwise wait for ids and steps that never come."""
    tip = session.execute(
        select(
            select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id).scalar_subquery(),
            select(func.max(Metric.step)).where(Metric.job_id == job_id).scalar_subquery(),
            select(func.max(LayerTrace.step)).where(LayerTrace.job_id == job_id).scalar_subquery(),
            select(func.max(JobLog.id)).where(JobLog.job_id == job_id).scalar_subquery(),
        )
    ).one()
    top = Cursor(*(int(part or 0) for part in tip))
    return Cursor(*(min(a, b) for a, b in zip(astuple(cursor), astuple(top), strict=True)))
