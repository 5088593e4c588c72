"""Inference requests: checked against the trained model at submit time, then awaited.

A request names a training job of the caller and one of its checkpoints; the reference
("final", "best", "latest") is pinned to a checkpoint id here, so the worker's model
cache key is known before the job runs and a later checkpoint cannot change the answer.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from api.errors import pydantic_details
from shared import repository
from shared.config import Settings
from shared.errors import NotFound, SpecError
from shared.infer_inputs import InputLimits, inputs_tensor
from shared.models import FINAL_STATUSES, Job
from shared.notify import JobEndSignal
from shared.spec import InferSpec
from shared.spec_check import load_stored_spec


def validate_infer(
    fields: dict[str, Any], *, session: Session, owner: str, settings: Settings
) -> InferSpec:
    """The request, its checkpoint pinned; 400 / 404 / 413 naming the field otherwise."""
    try:
        request = InferSpec.model_validate(
            {k: v for k, v in fields.items() if k != "checkpoint_id"}
        )
    except ValidationError as exc:
        details = pydantic_details(exc, "")
        for d in details:
            d["loc"] = d["loc"].lstrip(".")
        first = details[0]
        raise SpecError(f"{first['loc']}: {first['msg']}", details=details) from None
    source = repository.get_job(session=session, job_id=request.model_job_id, owner=owner)
    if source.kind != "train":
        raise SpecError(
            f"model_job_id: job {source.id} is an inference job; name a training job",
            details=[{"loc": "model_job_id", "msg": "not a training job"}],
        )
    try:
        ckpt_id = repository.checkpoint_id(
            session=session, job_id=source.id, ref=request.checkpoint
        )
    except NotFound:
        hint = "" if source.status == "succeeded" else f" (the job is {source.status})"
        raise NotFound(
            f"checkpoint: job {source.id} has no {request.checkpoint!r} checkpoint{hint}",
            details=[{"loc": "checkpoint", "msg": "not found"}],
        ) from None
    train_spec = load_stored_spec(source.spec, job_id=source.id, loc="model_job_id")
    inputs_tensor(request.inputs, train_spec.data, InputLimits.of(settings))
    request.checkpoint_id = ckpt_id
    return request


def wait_final(session: Session, job: Job, timeout: float, ended: JobEndSignal) -> bool:
    """Wait until the job row is final or `timeout` passes; True when it is final.

    With Redis the wait blocks on the worker's announcement (shared.notify) in slices,
    reading the row after each; without it the row is polled, from 2 ms backing off to
    50 ms (a short poll is one primary-key read).
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    final = tuple(str(s) for s in FINAL_STATUSES)
    while True:
        left = deadline - time.monotonic()
        if ended.available:
            ended.wait(job.id, min(left, 0.5))  # a just-queued job is not done: wait first
        row = session.execute(
            select(Job.status, Job.summary, Job.error, Job.finished_at).where(Job.id == job.id)
        ).one()
        session.commit()  # end the read transaction: the next read sees new commits
        if row.status in final:
            # What the answer needs, in the same read (not the spec and its inputs again).
            for name, value in row._mapping.items():
                set_committed_value(job, name, value)
            return True
        if time.monotonic() >= deadline:
            session.refresh(job)
            return False
        if not ended.available:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.05)
