"""Storing a checked job and sending its message: the row exists before the message."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import current_owner
from api.context import db, services
from api.idempotency import Idempotency, replayed
from api.inference import validate_infer
from shared import repository
from shared.disk import disk_room
from shared.errors import DiskFull
from shared.models import Job, utcnow
from shared.queues import QUEUE_INFER, send_job

log = logging.getLogger(__name__)


def enqueue(
    *,
    session: Session,
    owner: str,
    kind: str,
    spec: dict[str, Any],
    queue: str,
    priority: int = 5,
    source_job_id: uuid.UUID | None = None,
    idempotency: Idempotency | None = None,
) -> Job:
    """Commit the queued job, then send "work on job X"; a send that fails is left to the
    sweeper (the job stays queued and is re-sent), so the caller still gets its job. A
    concurrent request with the same Idempotency-Key that committed first wins: its job
    is the answer, and nothing is sent twice.

    One short transaction, stamped as sent: the sweeper treats a send that then fails
    the same way as a message lost later (with Redis it sees the queue short of a
    message within TRAINYARD_RESEND_GRACE_SECONDS), so a second commit to record the send
    would buy nothing."""
    refuse_when_disk_full()
    if kind == "infer":
        # Inference rows are transient: their commit skips the WAL flush
        # (repository.relax_durability).
        repository.relax_durability(session)
    try:
        job = repository.create_job(
            session=session, owner=owner, kind=kind, spec=spec, queue=queue,
            priority=priority, source_job_id=source_job_id, enqueued_at=utcnow(),
            idempotency_key=idempotency.key if idempotency else None,
            request_sha256=idempotency.request_sha256 if idempotency else None,
        )  # fmt: skip
        session.commit()
    except IntegrityError:
        session.rollback()
        first = replayed(session, owner, idempotency)
        if first is None:
            raise
        return first
    try:
        send_job(services().celery, job_id=str(job.id), kind=kind, queue=queue)
    except Exception:
        log.exception("could not send job %s to the broker; the sweeper will retry", job.id)
    return job


def refuse_when_disk_full() -> None:
    """507 before storing a job on the embedded SQLite database whose disk is full, as
    /readyz says (SQLite would still take a few jobs into its WAL file, then fail)."""
    settings = services().settings
    if settings.database_url is not None:
        return
    try:
        full = disk_room(settings.home).full
    except OSError:
        return  # cannot tell: the insert will say
    if full:
        raise DiskFull("the server's disk is full; nothing was stored")


def queue_infer(fields: dict[str, Any], idempotency: Idempotency | None = None) -> Job:
    """Check an inference request ({"model_job_id", "checkpoint", "inputs"}) and queue it
    on the `infer` queue; POST /jobs and POST /models/<id>/predict both come here."""
    request = validate_infer(
        fields, session=db(), owner=current_owner(), settings=services().settings
    )
    return enqueue(
        session=db(),
        owner=current_owner(),
        kind="infer",
        spec=request.model_dump(mode="json"),
        queue=QUEUE_INFER,
        source_job_id=request.model_job_id,
        idempotency=idempotency,
    )
