"""The sweep controller's task: one pass over a sweep, then the new trials' messages.

Runs on the `sweeps` queue (`trainyard worker -Q sweeps`): passes are short and must not
wait behind training. Messages come when a sweep is created or cancelled, when one of its
trials ends, and from the sweeper for a running sweep that no pass has seen for a while.
"""

from __future__ import annotations

import logging
import uuid
from functools import cache

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings
from shared.db import make_engine, make_session_factory, session_scope
from shared.db_retry import retry_database
from shared.models import Sweep, SweepStatus
from shared.queues import SWEEP_TASK, send_job
from shared.sweeps.controller import Queued, run_pass
from worker.celery_app import app

log = logging.getLogger(__name__)


@cache
def _sessions() -> sessionmaker[Session]:
    return make_session_factory(make_engine(get_settings().resolved_database_url()))


@app.task(name=SWEEP_TASK)
def sweep_pass(sweep_id: str) -> int:
    """Settle ended trials and start new ones; returns how many trial jobs were queued."""
    settings = get_settings()

    def once() -> list[Queued]:
        with session_scope(_sessions()) as session:
            return run_pass(session=session, sweep_id=uuid.UUID(sweep_id), settings=settings)

    try:
        queued = retry_database(
            once, what="a sweep controller pass", window_seconds=settings.db_outage_seconds
        )
    except Exception as exc:
        # Shown on the sweep until a pass succeeds; the sweeper sends the next one.
        log.exception("sweep %s: controller pass failed", sweep_id)
        _record_failure(uuid.UUID(sweep_id), f"the last controller pass failed: {exc}"[:2000])
        return 0
    for job in queued:
        try:
            send_job(app, job_id=str(job.job_id), kind="train", queue=job.queue)
        except Exception:
            log.warning("sweep %s: job %s queued; its message is left to the sweeper", sweep_id,
                        job.job_id)  # fmt: skip
    return len(queued)


def _record_failure(sweep_id: uuid.UUID, message: str) -> None:
    try:
        with session_scope(_sessions()) as session:
            session.execute(
                update(Sweep)
                .where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING)
                .values(error=message)
            )
    except Exception:
        log.exception("sweep %s: could not record the failed pass", sweep_id)
