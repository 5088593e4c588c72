"""Models: what a spec builds (checked and described, nothing stored), and predictions
from a trained job's model."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, url_for

from api.auth import current_owner
from api.body import json_object, refuse_unknown
from api.context import db, services
from api.idempotency import from_request as idempotency_of
from api.idempotency import replayed
from api.inference import wait_final
from api.ownership import parse_job_id
from api.serialize import job_json
from api.submit import queue_infer
from api.validation import validate_train_spec
from shared.errors import InferenceFailed, SpecError
from shared.net.summary import model_summary

bp = Blueprint("models", __name__)


@bp.post("/models/summary")
def summary() -> Response:
    """The dry run's findings: print(model), per-layer shapes, the named_parameters table."""
    body = json_object('{"spec": {...}}')
    if "spec" not in body:
        raise SpecError('the body must be {"spec": {...}}', details=[{"loc": "spec"}])
    checked = validate_train_spec(
        body["spec"], settings=services().settings, session=db(), owner=current_owner()
    )
    result = model_summary(checked.spec, checked.model, checked.dry_run)
    return jsonify(result.to_json())


@bp.post("/models/<job_id>/predict")
def predict(job_id: str) -> tuple[Response, int, dict[str, str]]:
    """Queue an inference job on the `infer` queue and wait (bounded) for its answer.

    200 with the predictions; 202 with the job to poll when `wait_seconds` (at most
    TRAINYARD_PREDICT_WAIT_SECONDS) pass first, or at once when this process already has
    TRAINYARD_PREDICT_MAX_WAITING requests waiting; 422 when the inference job failed.
    """
    body = json_object('{"inputs": [...]}')
    idempotency = idempotency_of(body)
    settings = services().settings
    wait = body.pop("wait_seconds", settings.predict_wait_seconds)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 600:
        raise SpecError(
            "wait_seconds must be a number of seconds between 0 and 600",
            details=[{"loc": "wait_seconds", "msg": "invalid"}],
        )
    refuse_unknown(
        body, {"checkpoint", "inputs"}, "a prediction is {'inputs', 'checkpoint', 'wait_seconds'}"
    )
    # A retry with the same Idempotency-Key waits for (or answers with) the first job.
    first = replayed(db(), current_owner(), idempotency)
    job = first or queue_infer({**body, "model_job_id": parse_job_id(job_id)}, idempotency)
    location = url_for("api_v1.jobs.get_job", job_id=str(job.id))
    headers = {"Location": location}
    waiters = services().predict_waiters
    if not waiters.acquire(blocking=False):  # enough threads wait already: poll the job
        return jsonify(job_json(job, with_spec=False)), 202, headers
    try:
        waited = min(float(wait), settings.predict_wait_seconds)
        final = wait_final(db(), job, waited, services().job_ended)
    finally:
        waiters.release()
    if not final:
        return jsonify(job_json(job, with_spec=False)), 202, headers
    if job.status != "succeeded":
        raise InferenceFailed(
            f"inference job {job.id} {job.status}: {job.error or 'no message'}",
            details=[{"loc": "job", "msg": str(job.id)}],
        )
    return jsonify({"job_id": str(job.id), **(job.summary or {})}), 200, headers
