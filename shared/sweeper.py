"""Re-send lost job messages and fail jobs whose workers vanished too often.

With Redis the sweeper looks into the broker (shared.broker_view) and re-sends messages
only while a queue holds fewer than it has queued jobs, a few seconds after they went
missing; otherwise it goes by the message's age (TRAINYARD_REQUEUE_AFTER_SECONDS).

The database row is the truth; Redis may lose a message (restart without persistence,
a send that failed after the row was committed). This pass makes the queue eventually
match the table.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.broker_view import live_messages
from shared.config import Settings
from shared.db import session_scope
from shared.db_retry import is_transient
from shared.models import Job
from shared.presence import touch_heartbeat
from shared.queues import ALL_QUEUES, send_job, send_sweep_pass

log = logging.getLogger(__name__)


def sweep_once(
    *,
    sessions: sessionmaker[Session],
    celery: Celery,
    settings: Settings,
    judge_leases: bool = True,
) -> dict[str, int]:
    """One pass; returns how many messages were re-sent and jobs failed or cancelled.

    `judge_leases=False` leaves running jobs alone (their leases may have run out only
    because their heartbeats could not reach the database).
    """
    resent = 0
    grace = settings.resend_grace_seconds
    broker_seen = True
    try:
        live = live_messages(celery, ALL_QUEUES, delivered_within=grace)
    except Exception:
        log.warning("cannot look into the broker; nothing is re-sent this sweep")
        live, broker_seen = {}, False
    # Looking into Redis, a message gone is known at once; otherwise go by its age.
    older_than = timedelta(seconds=grace if live is not None else settings.requeue_after_seconds)
    with session_scope(sessions) as session:
        ended, requeued = {}, 0
        if judge_leases:
            ended = repository.end_abandoned_jobs(
                session=session, max_attempts=settings.max_attempts
            )
            requeued = repository.requeue_lost_jobs(
                session=session, max_attempts=settings.max_attempts
            )
        jobs: list[Job] = []
        if broker_seen:  # blind, a re-send could only multiply messages
            jobs = repository.jobs_to_resend(session=session, older_than=older_than)
        if broker_seen and live is not None:
            queued = repository.queued_counts(session=session, older_than=older_than)
            jobs = _missing_turns(jobs, live, queued)
        for job in jobs:
            try:
                send_job(celery, job_id=str(job.id), kind=job.kind, queue=job.queue)
            except Exception:
                log.warning("broker unreachable; will retry job %s next sweep", job.id)
                break
            repository.mark_enqueued(session=session, job_id=job.id)
            repository.add_event(session=session, job_id=job.id, kind="resent")
            resent += 1
    passes = 0
    if broker_seen:  # a transaction of its own: sweep rows are not locked with job rows
        with session_scope(sessions) as session:
            passes = _ask_sweep_passes(session, celery, settings)
    return {"resent": resent, "requeued": requeued, "sweep_passes": passes, **ended}


def _ask_sweep_passes(session: Session, celery: Celery, settings: Settings) -> int:
    """A controller pass for each running sweep that has had none for a while (its
    message lost, its controller restarted, a trial ended by this sweeper). The ask is
    stamped as a pass, so a controller that is down gets one message per period."""
    older_than = timedelta(seconds=settings.sweep_pass_seconds)
    asked = 0
    for sweep_id in repository.sweeps_to_tick(session=session, older_than=older_than):
        try:
            send_sweep_pass(celery, sweep_id=str(sweep_id))
        except Exception:
            log.warning("broker unreachable; will ask for sweep passes next sweep")
            break
        repository.mark_sweep_asked(session=session, sweep_id=sweep_id)
        asked += 1
    return asked


def _missing_turns(due: list[Job], live: dict[str, list[str]], queued: dict[str, int]) -> list[Job]:
    """Of the queued jobs due a re-send, those whose turn the broker lacks.

    A worker runs whichever queued job comes first in its queue, so any message is a
    turn; a queue holding as many messages as it has queued jobs gets none more (oldest
    jobs without a message of their own first).
    """
    chosen = []
    for queue, count in queued.items():
        messages = live.get(queue, [])
        own = set(messages)
        waiting = [job for job in due if job.queue == queue and str(job.id) not in own]
        chosen.extend(waiting[: max(0, count - len(messages))])
    return chosen


def run_forever(
    *,
    sessions: sessionmaker[Session],
    celery: Celery,
    settings: Settings,
    every_seconds: float,
    stop: threading.Event,
) -> None:
    """Sweep until `stop` is set; errors are logged and retried, never fatal.

    After a database outage the sweeper waits one lease before judging leases again: the
    workers' heartbeats could not land while it lasted, and they need that long to renew.
    """
    database_down, judge_from = False, 0.0
    while not stop.wait(every_seconds):
        judge = not database_down and time.monotonic() >= judge_from
        try:
            counts = sweep_once(
                sessions=sessions, celery=celery, settings=settings, judge_leases=judge
            )
        except Exception as exc:
            if is_transient(exc):
                database_down = True
                log.warning("sweep: database unreachable; retrying in %ss", every_seconds)
            else:
                log.exception("sweep failed; retrying in %ss", every_seconds)
            continue
        touch_heartbeat(settings.heartbeat_file)  # the container healthcheck reads its age
        if database_down:
            database_down, judge_from = False, time.monotonic() + settings.lease_seconds
            log.info("sweep: database back; judging leases again in %ss", settings.lease_seconds)
        if any(counts.values()):
            log.info("sweep: %s", counts)
