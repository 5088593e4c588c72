"""What a claimed training job starts from: the weights it fine-tunes and the resumable
checkpoint it goes on from."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.errors import NotFound
from shared.models import Checkpoint
from shared.spec import JobSpec
from worker.training.resume import ResumePoint


def resume_point(
    sessions: sessionmaker[Session], job_id: uuid.UUID, worker: str, *, attempt: int
) -> ResumePoint | None:
    """Where a re-claimed job goes on from: its newest resumable checkpoint (None: from
    the start). Rows and checkpoints the earlier attempt wrote past that step go, so each
    step keeps exactly one row of each kind (only while this worker holds the job)."""
    with session_scope(sessions) as session:
        repository.assert_held(session=session, job_id=job_id, worker=worker)
        ckpt = repository.latest_resumable(session=session, job_id=job_id)
        if ckpt is None and attempt == 1:
            return None  # a first run (a preempted job has its checkpoint)
        step = ckpt.step if ckpt is not None else 0
        repository.delete_rows_after(session=session, job_id=job_id, step=step)
        repository.delete_checkpoints_after(session=session, job_id=job_id, step=step)
        message = f"resumed from step {step} (attempt {attempt})"
        repository.add_event(session=session, job_id=job_id, kind="resumed", message=message,
                             data={"step": step, "attempt": attempt})  # fmt: skip
        if ckpt is None or ckpt.optimizer_state is None or ckpt.resume_state is None:
            return None
        return _point(session, ckpt)


def resume_point_to_read(sessions: sessionmaker[Session], job_id: uuid.UUID) -> ResumePoint | None:
    """The resume point the job's first node found (resume_point), for a node that joined
    its gang: read only, after node 0 has cleared what lies past it."""
    with sessions() as session:
        ckpt = repository.latest_resumable(session=session, job_id=job_id)
        if ckpt is None or ckpt.optimizer_state is None or ckpt.resume_state is None:
            return None
        return _point(session, ckpt)


def _point(session: Session, ckpt: Checkpoint) -> ResumePoint:
    try:
        best = repository.get_checkpoint(session=session, job_id=ckpt.job_id, ref="best")
    except NotFound:
        best = None
    assert ckpt.optimizer_state is not None and ckpt.resume_state is not None
    return ResumePoint(
        step=ckpt.step,
        model_state=ckpt.model_state,
        optimizer_state=ckpt.optimizer_state,
        resume_state=ckpt.resume_state,
        best_model_state=best.model_state if best is not None else None,
    )


def initial_state(session: Session, spec: JobSpec) -> bytes | None:
    """The weights a fine-tuning job starts from (ownership was checked at submit time)."""
    start = spec.model.init_from
    if start is None:
        return None
    ckpt = repository.get_checkpoint(session=session, job_id=start.job_id, ref=start.checkpoint)
    return ckpt.model_state
