"""Re-send lost job messages and fail jobs whose workers vanished too often.

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
from shared.config import Settings
from shared.db import session_scope
from shared.queues import send_job

log = logging.getLogger(__name__)


def sweep_once(
    *, sessions: sessionmaker[Session], celery: Celery, settings: Settings
) -> dict[str, int]:
    """One pass; returns how many messages were re-sent and jobs failed or cancelled."""
    resent = 0
    with session_scope(sessions) as session:
        ended = repository.end_abandoned_jobs(session=session, max_attempts=settings.max_attempts)
        jobs = repository.jobs_to_resend(
            session=session,
            older_than=timedelta(seconds=settings.requeue_after_seconds),
            max_attempts=settings.max_attempts,
        )
        for job in jobs:
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
