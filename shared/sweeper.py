"""Re-send lost job messages and fail jobs whose workers vanished too often.

With Redis the sweeper looks into the broker (shared.broker_view) and re-sends a job's
message only when none is alive, a few seconds after it went missing; otherwise it goes
by the message's age (TRAINYARD_REQUEUE_AFTER_SECONDS).

The database row is the truth; Redis may lose a message (restart without persistence,
a send that failed after the row was committed). This pass makes the queue eventually
match the table.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.broker_view import waiting_job_ids
from shared.config import Settings
from shared.db import session_scope
from shared.queues import ALL_QUEUES, send_job

log = logging.getLogger(__name__)


def sweep_once(
    *, sessions: sessionmaker[Session], celery: Celery, settings: Settings
) -> dict[str, int]:
    """One pass; returns how many messages were re-sent and jobs failed or cancelled."""
    resent = 0
    grace = settings.resend_grace_seconds
    try:
        waiting = waiting_job_ids(celery, ALL_QUEUES, delivered_within=grace)
    except Exception:
        log.warning("broker unreachable; nothing is re-sent this sweep")
        waiting = set()  # nothing is sent anyway; abandoned jobs still end below
    # Looking into Redis, a message gone is known at once; otherwise go by its age.
    older_than = grace if waiting is not None else settings.requeue_after_seconds
    with session_scope(sessions) as session:
        ended = repository.end_abandoned_jobs(session=session, max_attempts=settings.max_attempts)
        jobs = repository.jobs_to_resend(
            session=session,
            older_than=timedelta(seconds=older_than),
            max_attempts=settings.max_attempts,
        )
        for job in jobs:
            if waiting is not None and str(job.id) in waiting:
                continue  # its message is alive: a second one would only multiply
            try:
                send_job(celery, job_id=str(job.id), kind=job.kind, queue=job.queue)
            except Exception:
                log.warning("broker unreachable; will retry job %s next sweep", job.id)
                break
            repository.mark_enqueued(session=session, job_id=job.id)
            repository.add_event(session=session, job_id=job.id, kind="resent")
            resent += 1
    return {"resent": resent, **ended}


def run_forever(
    *,
    sessions: sessionmaker[Session],
    celery: Celery,
    settings: Settings,
    every_seconds: float,
    stop: threading.Event,
) -> None:
    """Sweep until `stop` is set; errors are logged and retried, never fatal."""
    while not stop.wait(every_seconds):
        try:
            counts = sweep_once(sessions=sessions, celery=celery, settings=settings)
            if any(counts.values()):
                log.info("sweep: %s", counts)
        except Exception:
            log.exception("sweep failed; retrying in %ss", every_seconds)
