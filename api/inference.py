"""Inference requests: checked against the trained model at submit time, then awaited.

A request names a training job of the caller and one of its checkpoints; the reference
("final", "best", "latest") is pinned to a checkpoint id here, so the worker's model
cache key is known before the job runs and a later checkpoint cannot change the answer.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from cachetools import TTLCache
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from shared import repository
from shared.config import Settings
from shared.errors import NotFound, SpecError, pydantic_details
from shared.infer_inputs import InputLimits, inputs_tensor
from shared.models import FINAL_STATUSES, Job, JobStatus, utcnow
from shared.notify import JobEndSignal
from shared.serving import PredictCall
from shared.spec import DataSpec, InferSpec
from shared.spec_check import load_stored_spec

# How long the serving line trusts a model lookup (see PinnedModels).
PIN_SECONDS = 2.0
_PinKey = tuple[str, uuid.UUID, str]


def validate_infer(
    fields: dict[str, Any],
    *,
    session: Session,
    owner: str,
    settings: Settings,
    pins: PinnedModels | None = None,
) -> InferSpec:
    """The request, its checkpoint pinned; 400 / 404 / 413 naming the field otherwise.

    With `pins`, a model looked up in the last PIN_SECONDS is not looked up again."""
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
    key = (owner, request.model_job_id, request.checkpoint)
    pinned = pins.get(key) if pins is not None else None
    if pinned is None:
        pinned = _pin(session, owner, request)
        if pins is not None:
            pins.put(key, pinned)
    request.checkpoint_id, data = pinned
    inputs_tensor(request.inputs, data, InputLimits.of(settings))
    return request


def _pin(session: Session, owner: str, request: InferSpec) -> tuple[uuid.UUID, DataSpec]:
    """The checkpoint the request's reference points at, and the training data's spec."""
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
    return ckpt_id, train_spec.data


class PinnedModels:
    """(owner, model job, checkpoint reference) -> (checkpoint id, data spec), each kept
    PIN_SECONDS: the serving line's requests for a warm model read nothing from the
    database. The price: a model job deleted, or a "best" / "latest" checkpoint moved,
    is seen by this process up to PIN_SECONDS later."""

    def __init__(self, ttl_seconds: float = PIN_SECONDS, max_entries: int = 1024) -> None:
        self._entries: TTLCache[_PinKey, tuple[uuid.UUID, DataSpec]] = TTLCache(
            maxsize=max_entries, ttl=ttl_seconds, timer=time.monotonic
        )
        self._lock = threading.Lock()  # cachetools' caches are not thread-safe

    def get(self, key: _PinKey) -> tuple[uuid.UUID, DataSpec] | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: _PinKey, pinned: tuple[uuid.UUID, DataSpec]) -> None:
        with self._lock:
            self._entries[key] = pinned


def served_call(request: InferSpec, *, owner: str, queue: str) -> PredictCall:
    """A checked request (its checkpoint pinned) as the serving line carries it."""
    assert request.checkpoint_id is not None, "validate_infer pins the checkpoint"
    return PredictCall(
        id=uuid.uuid4(),
        owner=owner,
        queue=queue,
        model_job_id=request.model_job_id,
        checkpoint=request.checkpoint,
        checkpoint_id=request.checkpoint_id,
        inputs=request.inputs,
        sent_at=utcnow(),
    )


def pending_job(call: PredictCall) -> Job:
    """The job a served request will be recorded as, as it stands while not yet answered
    (not stored: the worker writes the record once it has answered)."""
    return Job(
        id=call.id, owner=call.owner, kind="infer", status=JobStatus.QUEUED, spec=call.spec(),
        queue=call.queue, priority=5, attempt=0, cancel_requested=False,
        preempt_requested=False, progress_step=0, progress_epoch=0,
        source_job_id=call.model_job_id, created_at=call.sent_at, enqueued_at=call.sent_at,
    )  # fmt: skip


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
