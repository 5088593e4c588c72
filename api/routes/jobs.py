"""Jobs: submit, list, show, cancel, events."""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from api.auth import audit_here, current_owner
from api.body import json_object, refuse_unknown
from api.context import db, services
from api.idempotency import Idempotency, replayed
from api.idempotency import from_request as idempotency_of
from api.ownership import owned_job
from api.params import choice_arg, int_arg
from api.quotas import check_queued_quota
from api.serialize import event_json, job_json
from api.submit import enqueue, queue_infer
from api.validation import validate_train_spec
from shared import repository
from shared.errors import BadParameter, InvalidTransition, SpecError
from shared.models import Job, JobStatus
from shared.queues import queue_for_device

bp = Blueprint("jobs", __name__)

JOB_KINDS = ("train", "infer")
DEFAULT_PRIORITY = 5


@bp.post("/jobs")
def submit() -> tuple[Response, int, dict[str, str]]:
    """Validate, store as queued, then send the message (the row exists before the message)."""
    body = json_object('{"kind": "train", "spec": {...}}')
    idempotency = idempotency_of(body)
    first = replayed(db(), current_owner(), idempotency)
    if first is not None:  # a retry: the job the first request made
        location = url_for("api_v1.jobs.get_job", job_id=str(first.id))
        return jsonify(job_json(first)), 202, {"Location": location}
    kind = body.get("kind", "train")
    if kind not in JOB_KINDS:
        raise SpecError(
            f"kind must be one of {list(JOB_KINDS)}, got {kind!r}",
            details=[{"loc": "kind", "msg": "unsupported job kind"}],
        )
    submit_kind = submit_infer if kind == "infer" else submit_train
    job = submit_kind(body, idempotency)
    location = url_for("api_v1.jobs.get_job", job_id=str(job.id))
    return jsonify(job_json(job)), 202, {"Location": location}


def submit_train(body: dict[str, Any], idempotency: Idempotency | None = None) -> Job:
    """A training job from {"kind": "train", "spec": {...}, "priority": 0-9}."""
    spec = validate_train_spec(
        body.get("spec"), settings=services().settings, session=db(), owner=current_owner()
    ).spec
    refuse_unknown(
        body, {"kind", "spec", "priority"}, "a training job is {'kind', 'spec', 'priority'}"
    )
    priority = job_priority(body.get("priority", DEFAULT_PRIORITY))
    check_queued_quota(session=db(), owner=current_owner(), settings=services().settings)
    return enqueue(
        session=db(),
        owner=current_owner(),
        kind="train",
        spec=spec.model_dump(mode="json"),
        queue=queue_for_device(spec.train.device),
        priority=priority,
        source_job_id=spec.model.init_from.job_id if spec.model.init_from else None,
        idempotency=idempotency,
    )


def job_priority(value: Any) -> int:
    """A job's priority, 0 (last) to 9 (first); a 400 naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise SpecError(
            f"priority must be a whole number from 0 (runs last) to 9 (runs first), got {value!r}",
            details=[{"loc": "priority", "msg": "expected an integer 0-9"}],
        )
    return value


def submit_infer(body: dict[str, Any], idempotency: Idempotency | None = None) -> Job:
    """An inference job from {"kind": "infer", "model_job_id", "checkpoint", "inputs"}."""
    refuse_unknown(
        body,
        {"kind", "model_job_id", "checkpoint", "inputs"},
        "an inference job is {'kind', 'model_job_id', 'checkpoint', 'inputs'}",
    )
    return queue_infer({k: v for k, v in body.items() if k != "kind"}, idempotency)


def _decode_cursor(raw: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, job_id = base64.urlsafe_b64decode(raw.encode()).decode().partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("cursor time without zone")
        return when, uuid.UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadParameter("invalid cursor", details=[{"loc": "cursor"}]) from None


def _encode_cursor(at: datetime, job_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{job_id}".encode()).decode()


@bp.get("/jobs")
def list_jobs() -> Response:
    """The caller's jobs, newest first, filtered by status / kind, paged by cursor."""
    status = choice_arg("status", tuple(JobStatus))
    kind = choice_arg("kind", JOB_KINDS)
    max_limit = services().settings.page_limit
    limit = int_arg("limit", default=min(50, max_limit), lo=1, hi=max_limit)
    assert limit is not None
    cursor = request.args.get("cursor")
    jobs = repository.list_jobs(
        session=db(),
        owner=current_owner(),
        status=status,
        kind=kind,
        limit=limit,
        before=_decode_cursor(cursor) if cursor else None,
    )
    next_cursor = _encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(jobs) == limit else None
    return jsonify(
        {"jobs": [job_json(j, with_spec=False) for j in jobs], "next_cursor": next_cursor}
    )


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """One job: status, progress, summary, error."""
    job = owned_job(job_id)
    return jsonify(job_json(job))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> tuple[Response, int]:
    """Queued jobs end at once; running ones stop at their next step (409 if already final)."""
    return _ask(job_id, repository.request_cancel)


@bp.post("/jobs/<job_id>/preempt")
def preempt(job_id: str) -> tuple[Response, int]:
    """A running job checkpoints at its next heartbeat, goes back to the queue and resumes
    from there later, without using an attempt (409 unless it is running)."""
    return _ask(job_id, repository.request_preempt)


def _ask(job_id: str, request: Callable[..., None]) -> tuple[Response, int]:
    """Record a request on the caller's job (and in the audit log); 202 with the job as
    it is now."""
    session = db()
    job = owned_job(job_id)
    request(session=session, job_id=job.id)
    audit_here(session, request.__name__.removeprefix("request_"), f"job {job.id}")
    session.commit()
    session.refresh(job)
    return jsonify(job_json(job)), 202


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    """Delete one of the caller's jobs with everything it recorded (metrics, traces,
    checkpoints, events). A running job's worker loses its claim at its next heartbeat
    and stops; nothing it writes afterwards is kept."""
    session = db()
    job = owned_job(job_id)
    audit_here(session, "job_deleted", f"job {job.id}", detail=f"was {job.status}")
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        with contextlib.suppress(InvalidTransition):  # it may have ended meanwhile
            repository.request_cancel(session=session, job_id=job.id)
    session.delete(job)
    session.commit()
    return "", 204


@bp.get("/jobs/<job_id>/events")
def events(job_id: str) -> Response:
    """The job's lifecycle log, oldest first."""
    session = db()
    job = owned_job(job_id)
    return jsonify(
        {"events": [event_json(e) for e in repository.list_events(session=session, job_id=job.id)]}
    )
