"""Jobs: submit, list, show, cancel, events."""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid
from collections.abc import Callable
from datetime import datetime

from flask import Blueprint, Response, jsonify, url_for

from api.auth import audit_here, current_owner
from api.body import raw_body
from api.context import db, services
from api.contract import answers, body_model, contract, query_model, within
from api.idempotency import Idempotency, replayed
from api.idempotency import from_request as idempotency_of
from api.ownership import owned_job
from api.quotas import check_queued_quota
from api.serialize import event_json, job_json
from api.submit import enqueue, queue_infer
from shared import repository
from shared.contract.queries import JobListQuery, NoQuery
from shared.contract.requests import InferJobRequest, JobRequest, TrainJobRequest
from shared.contract.responses import Events, JobPage
from shared.contract.responses import Job as JobOut
from shared.errors import BadParameter, InvalidTransition
from shared.models import Job, JobStatus
from shared.queues import queue_for_device
from shared.validation import validate_train_spec

bp = Blueprint("jobs", __name__)
TAGS = ["jobs"]


@bp.post("/jobs")
@contract.validate(
    query=NoQuery,
    json=JobRequest,
    resp=answers("HTTP_404", "HTTP_422", "HTTP_507", HTTP_202=JobOut),
    tags=TAGS,
    operation_id="submitJob",
)
def submit() -> tuple[Response, int, dict[str, str]]:
    """Submit a training or an inference job.

    Validated first (the spec by pydantic, then a dry run on the meta device: a 400 names
    the field or layer), stored as queued, then its message is sent. `Location` is the
    job; an `Idempotency-Key` header makes a retry answer with the first request's job.
    """
    idempotency = idempotency_of(raw_body())
    first = replayed(db(), current_owner(), idempotency)
    if first is not None:  # a retry: the job the first request made
        location = url_for("api_v1.jobs.get_job", job_id=str(first.id))
        return jsonify(job_json(first)), 202, {"Location": location}
    asked = body_model(JobRequest).root
    if isinstance(asked, InferJobRequest):
        job = queue_infer(asked.model_dump(exclude={"kind"}), idempotency)
    else:
        job = submit_train(asked, idempotency)
    location = url_for("api_v1.jobs.get_job", job_id=str(job.id))
    return jsonify(job_json(job)), 202, {"Location": location}


def submit_train(asked: TrainJobRequest, idempotency: Idempotency | None = None) -> Job:
    """Check a training job (dry run, quotas) and queue it."""
    spec = validate_train_spec(
        asked.spec, settings=services().settings, session=db(), owner=current_owner()
    ).spec
    check_queued_quota(session=db(), owner=current_owner(), settings=services().settings)
    return enqueue(
        session=db(),
        owner=current_owner(),
        kind="train",
        spec=spec.model_dump(mode="json"),
        queue=queue_for_device(spec.train.device),
        priority=asked.priority,
        source_job_id=spec.model.init_from.job_id if spec.model.init_from else None,
        idempotency=idempotency,
    )


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
@contract.validate(query=JobListQuery, resp=answers(HTTP_200=JobPage), tags=TAGS)
def list_jobs() -> Response:
    """The caller's jobs, newest first, filtered by status / kind, paged by cursor."""
    asked: JobListQuery = query_model(JobListQuery)
    max_limit = services().settings.page_limit
    limit = within("limit", asked.limit, min(50, max_limit), max_limit)
    jobs = repository.list_jobs(
        session=db(),
        owner=current_owner(),
        status=asked.status,
        kind=asked.kind,
        limit=limit,
        before=_decode_cursor(asked.cursor) if asked.cursor else None,
    )
    next_cursor = _encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(jobs) == limit else None
    return jsonify(
        {"jobs": [job_json(j, with_spec=False) for j in jobs], "next_cursor": next_cursor}
    )


@bp.get("/jobs/<job_id>")
@contract.validate(
    query=NoQuery, resp=answers("HTTP_404", HTTP_200=JobOut), tags=TAGS, operation_id="getJob"
)
def get_job(job_id: str) -> Response:
    """One job: status, progress, summary, error."""
    job = owned_job(job_id)
    return jsonify(job_json(job))


@bp.post("/jobs/<job_id>/cancel")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_404", "HTTP_409", HTTP_202=JobOut),
    tags=TAGS,
    operation_id="cancelJob",
)
def cancel(job_id: str) -> tuple[Response, int]:
    """Queued jobs end at once; running ones stop at their next step (409 if already final)."""
    return _ask(job_id, repository.request_cancel)


@bp.post("/jobs/<job_id>/preempt")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_404", "HTTP_409", HTTP_202=JobOut),
    tags=TAGS,
    operation_id="preemptJob",
)
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
@contract.validate(
    query=NoQuery, resp=answers("HTTP_204", "HTTP_404"), tags=TAGS, operation_id="deleteJob"
)
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
@contract.validate(
    query=NoQuery, resp=answers("HTTP_404", HTTP_200=Events), tags=TAGS, operation_id="getJobEvents"
)
def events(job_id: str) -> Response:
    """The job's lifecycle log, oldest first."""
    session = db()
    job = owned_job(job_id)
    return jsonify(
        {"events": [event_json(e) for e in repository.list_events(session=session, job_id=job.id)]}
    )
