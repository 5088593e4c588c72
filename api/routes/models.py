"""Models: what a spec builds (checked and described, nothing stored), and predictions
from a trained job's model."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, url_for

from api.auth import current_owner
from api.body import raw_body
from api.context import db, services
from api.contract import answers, body_model, contract
from api.idempotency import from_request as idempotency_of
from api.idempotency import replayed
from api.inference import wait_final
from api.ownership import parse_job_id
from api.serialize import job_json
from api.submit import queue_infer
from api.validation import validate_train_spec
from shared.contract.queries import NoQuery
from shared.contract.requests import PredictRequest, SummaryRequest
from shared.contract.responses import Job, ModelSummary, Prediction
from shared.errors import InferenceFailed
from shared.net.summary import model_summary

bp = Blueprint("models", __name__)


@bp.post("/models/summary")
@contract.validate(
    query=NoQuery,
    json=SummaryRequest,
    resp=answers("HTTP_404", HTTP_200=ModelSummary),
    tags=["models"],
    operation_id="summarizeModel",
)
def summary() -> Response:
    """The dry run's findings: print(model), per-layer shapes, the named_parameters table.
    Nothing is stored; a `read` token may ask."""
    asked: SummaryRequest = body_model(SummaryRequest)
    checked = validate_train_spec(
        asked.spec, settings=services().settings, session=db(), owner=current_owner()
    )
    result = model_summary(checked.spec, checked.model, checked.dry_run)
    return jsonify(result.to_json())


@bp.post("/models/<job_id>/predict")
@contract.validate(
    query=NoQuery,
    json=PredictRequest,
    resp=answers("HTTP_404", "HTTP_422", "HTTP_507", HTTP_200=Prediction, HTTP_202=Job),
    tags=["models"],
    operation_id="predict",
)
def predict(job_id: str) -> tuple[Response, int, dict[str, str]]:
    """Queue an inference job on the `infer` queue and wait (bounded) for its answer.

    200 with the predictions; 202 with the job to poll when `wait_seconds` (at most
    TRAINYARD_PREDICT_WAIT_SECONDS) pass first, or at once when this process already has
    TRAINYARD_PREDICT_MAX_WAITING requests waiting; 422 when the inference job failed.
    """
    asked: PredictRequest = body_model(PredictRequest)
    idempotency = idempotency_of(raw_body())
    settings = services().settings
    wait = settings.predict_wait_seconds if asked.wait_seconds is None else asked.wait_seconds
    # A retry with the same Idempotency-Key waits for (or answers with) the first job.
    first = replayed(db(), current_owner(), idempotency)
    fields = {"checkpoint": asked.checkpoint, "inputs": asked.inputs}
    job = first or queue_infer({**fields, "model_job_id": parse_job_id(job_id)}, idempotency)
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
