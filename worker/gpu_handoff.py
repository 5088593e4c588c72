"""`device: auto` jobs prefer a free GPU.

An `auto` job's message goes to the `train` queue, which CPU and GPU workers both consume.
When a CPU worker takes such a message while a GPU worker is idle (its presence record
says so: shared/presence.py), it reserves that worker for two heartbeats (so CPU workers
handing over at once never pile jobs on one GPU) and hands the turn over: it sends the
same "work on job X" to `train.gpu` and claims nothing. Jobs of several processes stay:
a GPU worker drives one GPU. A GPU worker taking that message claims the first job
of X's own queue, as for any message.

The hand-off happens once, while the job is younger than TRAINYARD_AUTO_GPU_WAIT_SECONDS.
If the GPU worker got busy meanwhile, the sweeper sees the `train` queue short of a turn
and re-sends one there within TRAINYARD_RESEND_GRACE_SECONDS; by then the job is too old
to be handed over again, and the next free worker, CPU or GPU, runs it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job, JobStatus
from shared.presence import reserve_idle_gpu_worker
from shared.queues import QUEUE_DEFAULT, QUEUE_GPU, send_job

log = logging.getLogger(__name__)


def hand_to_gpu(
    *,
    job_id: uuid.UUID,
    delivered_on: str | None,
    consumed: Collection[str],
    sessions: sessionmaker[Session],
    settings: Settings,
    celery: Celery,
    redis_client: Any,
) -> bool:
    """Whether this CPU worker handed the message's turn to an idle GPU worker. Anything
    that goes wrong on the way (the database or Redis away) leaves the turn here, where
    the claim has its own retries."""
    if delivered_on != QUEUE_DEFAULT or QUEUE_GPU in consumed:
        return False
    if settings.auto_gpu_wait_seconds <= 0 or redis_client is None:
        return False
    try:
        with session_scope(sessions) as session:
            if not _young_single_process(session, job_id, settings.auto_gpu_wait_seconds):
                return False
        # Held for two beats: by then the GPU worker's record says busy if it took a job.
        target = reserve_idle_gpu_worker(
            redis_client, job_id=str(job_id), hold_seconds=2 * settings.heartbeat_seconds
        )
        if target is None:
            return False
        send_job(celery, job_id=str(job_id), kind="train", queue=QUEUE_GPU)
    except Exception as exc:
        log.warning("job %s: not offered to a GPU worker (%s)", job_id, exc)
        return False
    try:
        with session_scope(sessions) as session:
            repository.add_event(
                session=session, job_id=job_id, kind="offered",
                message=f"device auto: handed to the idle GPU worker {target}",
            )  # fmt: skip
    except Exception as exc:  # the hand-off stands; only its event is missing
        log.warning("job %s: hand-off event not stored (%s)", job_id, exc)
    log.info("job %s: device auto, handed to the idle GPU worker %s", job_id, target)
    return True


def _young_single_process(session: Session, job_id: uuid.UUID, wait_seconds: float) -> bool:
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.QUEUED or job.queue != QUEUE_DEFAULT:
        return False
    distributed = (job.spec.get("train") or {}).get("distributed") or {}
    if int(distributed.get("world_size") or 1) > 1:
        # Several processes want a GPU each (a GPU worker has one), or a gang's nodes
        # must all come from the queue it was sent on: the CPU runs them under gloo.
        return False
    # The database's clock judges the age (the API stamped created_at with it).
    cutoff = repository.database_now(session) - timedelta(seconds=wait_seconds)
    young = select(Job.id).where(Job.id == job_id, Job.created_at >= cutoff)
    return session.scalar(young) is not None
