"""Models: what a spec builds (checked and described, nothing stored), and predictions
from a trained job's model."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, url_for

from api.auth import current_owner
from api.body import raw_body
from api.context import db, release_db, services
from api.contract import answers, body_model, contract
from api.idempotency import from_request as idempotency_of
from api.idempotency import replayed
from api.inference import pending_job, served_call, validate_infer, wait_final
from api.ownership import parse_job_id
from api.serialize import job_json
from api.serving import ServingLine
from api.submit import queue_infer
from shared.contract.queries import NoQuery
from shared.contract.requests import PredictRequest, SummaryRequest
from shared.contract.responses import Job, ModelSummary, Prediction
from shared.errors import InferenceFailed
from shared.net.summary import model_summary
from shared.queues import QUEUE_INFER
from shared.validation import validate_train_spec

log = logging.getLogger(__name__)
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
    """Answer with the predictions of one forward pass on a warm inference worker.

    With a worker serving the `infer` queue (and no Idempotency-Key), the request goes
    down the serving line: to the worker over Redis, batched there with whatever else
    arrives within a few milliseconds, answered over Redis; the worker records it as an
    `infer` job afterwards. Otherwise (or with an Idempotency-Key, which asks for a
    stored job to replay) it is queued as an `infer` job and awaited.
    200 with the predictions; 202 with the job to poll when `wait_seconds` (at most
    TRAINYARD_PREDICT_WAIT_SECONDS) pass first, or at once when this process already has
    TRAINYARD_PREDICT_MAX_WAITING requests waiting; 422 when the prediction failed.
    """
    asked: PredictRequest = body_model(PredictRequest)
    idempotency = idempotency_of(raw_body())
    settings = services().settings
    wait = settings.predict_wait_seconds if asked.wait_seconds is None else asked.wait_seconds
    waited = min(float(wait), settings.predict_wait_seconds)
    fields = {"checkpoint": asked.checkpoint, "inputs": asked.inputs}
    line = services().serving
    if idempotency is None and line is not None and line.is_open(QUEUE_INFER):
        served = _serve(line, {**fields, "model_job_id": parse_job_id(job_id)}, waited)
        if served is not None:
            return served
    # A retry with the same Idempotency-Key waits for (or answers with) the first job.
    first = replayed(db(), current_owner(), idempotency)
    job = first or queue_infer({**fields, "model_job_id": parse_job_id(job_id)}, idempotency)
    location = url_for("api_v1.jobs.get_job", job_id=str(job.id))
    headers = {"Location": location}
    waiters = services().predict_waiters
    if not waiters.acquire(blocking=False):  # enough threads wait already: poll the job
        return jsonify(job_json(job, with_spec=False)), 202, headers
    try:
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


def _serve(
    line: ServingLine, fields: dict[str, Any], waited: float
) -> tuple[Response, int, dict[str, str]] | None:
    """The serving line: checks (reads only), send, block on the answer; None when the
    request could not be sent (Redis failed): the caller takes the job path."""
    started = time.perf_counter()
    owner = current_owner()
    svc = services()
    request = validate_infer(
        fields, session=db(), owner=owner, settings=svc.settings, pins=svc.pins
    )
    release_db()  # no transaction or connection held while waiting
    call = served_call(request, owner=owner, queue=QUEUE_INFER)
    headers = {"Location": url_for("api_v1.jobs.get_job", job_id=str(call.id))}
    waiters = services().predict_waiters
    waiting = waiters.acquire(blocking=False)
    checked = time.perf_counter()
    try:
        try:
            line.send(call)
        except redis.RedisError:
            log.warning("could not send a prediction down the serving line", exc_info=True)
            return None
        sent = time.perf_counter()
        # Past the waiting limit the request is still served; its caller polls the record.
        reply = line.wait(call.id, waited) if waiting else None
    finally:
        if waiting:
            waiters.release()
    # Where this process spent the request (a standard header; browsers' devtools show it).
    headers["Server-Timing"] = (
        f"check;dur={(checked - started) * 1000:.2f}, send;dur={(sent - checked) * 1000:.2f}, "
        f"answer;dur={(time.perf_counter() - sent) * 1000:.2f}"
    )
    if reply is None:
        return jsonify(job_json(pending_job(call), with_spec=False)), 202, headers
    answer, error = reply
    if error is not None or answer is None:
        raise InferenceFailed(
            f"inference job {call.id} failed: {error or 'no message'}",
            details=[{"loc": "job", "msg": str(call.id)}],
        )
    return jsonify({"job_id": str(call.id), **answer}), 200, headers
