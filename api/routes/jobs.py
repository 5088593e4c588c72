"""Jobs: submit, list, show, cancel, events."""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import ValidationError

from api.auth import current_owner
from api.context import db, services
from api.errors import pydantic_details
from api.serialize import event_json, job_json
from shared import repository
from shared.errors import SpecError
from shared.netspec import dry_run
from shared.queues import queue_for_device, send_train
from shared.spec import JobSpec

bp = Blueprint("jobs", __name__)
log = logging.getLogger(__name__)

JOB_KINDS = ("train",)
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def parse_job_id(raw: str) -> uuid.UUID:
    """A job id from the URL; a malformed one is 'not found' like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise repository.JobNotFound(f"job {raw!r} not found") from None


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise SpecError("the request body must be a JSON object", details=[{"loc": "body"}])
    return body


def validate_train_spec(raw: Any) -> tuple[JobSpec, dict[str, Any]]:
    """Pydantic, then a dry run on the meta device: both before anything is stored."""
    if not isinstance(raw, dict):
        raise SpecError("'spec' must be a JSON object", details=[{"loc": "spec", "msg": "missing"}])
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        details = pydantic_details(exc, "spec")
        first = details[0]
        raise SpecError(f"invalid spec: {first['loc']}: {first['msg']}", details=details) from None
    try:
        report = dry_run(spec, max_params=services().settings.max_params)
    except SpecError as exc:
        # Same field paths as pydantic's: relative to the request body.
        for detail in exc.details:
            detail["loc"] = f"spec.{detail['loc']}"
        raise
    return spec, {"param_count": report.param_count, "output_shape": list(report.output_shape)}


@bp.post("/jobs")
def submit() -> tuple[Response, int, dict[str, str]]:
    """Validate, store as queued, then send the message (the row exists before the message)."""
    body = _json_body()
    kind = body.get("kind", "train")
    if kind not in JOB_KINDS:
        raise SpecError(
            f"kind must be one of {list(JOB_KINDS)}, got {kind!r}",
            details=[{"loc": "kind", "msg": "unsupported job kind"}],
        )
    spec, _report = validate_train_spec(body.get("spec"))
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or not 0 <= priority <= 9:
        raise SpecError("priority must be an integer 0..9", details=[{"loc": "priority"}])
    session = db()
    queue = queue_for_device(spec.train.device)
    job = repository.create_job(
        session=session,
        owner=current_owner(),
        kind=kind,
        spec=spec.model_dump(mode="json"),
        queue=queue,
        priority=priority,
    )
    session.commit()
    try:
        send_train(services().celery, job_id=str(job.id), queue=queue, priority=priority)
        repository.mark_enqueued(session=session, job_id=job.id)
        session.commit()
    except Exception:
        # The row is the truth: the sweeper re-sends queued jobs whose message never left.
        log.exception("could not send job %s to the broker; the sweeper will retry", job.id)
        session.rollback()
    session.refresh(job)
    location = url_for("api_v1.jobs.get_job", job_id=str(job.id))
    return jsonify(job_json(job)), 202, {"Location": location}


def _decode_cursor(raw: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, job_id = base64.urlsafe_b64decode(raw.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise SpecError("invalid cursor", details=[{"loc": "cursor"}]) from None


def _encode_cursor(at: datetime, job_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{job_id}".encode()).decode()


@bp.get("/jobs")
def list_jobs() -> Response:
    """The caller's jobs, newest first, filtered by status / kind, paged by cursor."""
    status = request.args.get("status")
    kind = request.args.get("kind")
    if status and status not in STATUSES:
        raise SpecError(f"status must be one of {list(STATUSES)}", details=[{"loc": "status"}])
    if kind and kind not in ("train", "infer"):
        raise SpecError("kind must be 'train' or 'infer'", details=[{"loc": "kind"}])
    max_limit = services().settings.page_limit
    limit = request.args.get("limit", default=min(50, max_limit), type=int)
    if limit is None or not 1 <= limit <= max_limit:
        raise SpecError(f"limit must be 1..{max_limit}", details=[{"loc": "limit"}])
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
    job = repository.get_job(session=db(), job_id=parse_job_id(job_id), owner=current_owner())
    return jsonify(job_json(job))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> tuple[Response, int]:
    """Queued jobs end at once; running ones stop at their next step (409 if already final)."""
    session = db()
    job = repository.get_job(session=session, job_id=parse_job_id(job_id), owner=current_owner())
    repository.request_cancel(session=session, job=job)
    session.commit()
    return jsonify(job_json(job)), 202


@bp.get("/jobs/<job_id>/events")
def events(job_id: str) -> Response:
    """The job's lifecycle log, oldest first."""
    session = db()
    job = repository.get_job(session=session, job_id=parse_job_id(job_id), owner=current_owner())
    return jsonify(
        {"events": [event_json(e) for e in repository.list_events(session=session, job_id=job.id)]}
    )
