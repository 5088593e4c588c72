"""A job's summary, and jobs side by side."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify, request

from api.auth import current_owner
from api.context import db, services
from api.ownership import owned_job
from api.reports import metrics_at_a_glance, model_description, spec_differences, timing
from api.serialize import job_json
from shared import repository
from shared.errors import BadParameter, JobNotFound
from shared.models import Job

bp = Blueprint("reports", __name__)
MAX_COMPARE = 10


def _training_job(job: Job) -> Job | None:
    """The job that trained the model: the job itself, or an inference job's model job."""
    if job.kind == "train":
        return job
    if job.source_job_id is None:
        return None
    return repository.get_job(session=db(), job_id=job.source_job_id)


@bp.get("/jobs/<job_id>/summary")
def summary(job_id: str) -> Response:
    """Final and best metrics, counts, wall time, steps/s, print(model), named_parameters."""
    session = db()
    job = owned_job(job_id)
    trained = _training_job(job)
    model = model_description(trained, services().settings.max_params) if trained else None
    return jsonify(
        {
            "job": job_json(job, with_spec=False),
            **timing(job),
            "metrics": metrics_at_a_glance(session, job),
            "model": model,
        }
    )


def _ids() -> list[uuid.UUID]:
    raw = [part.strip() for part in (request.args.get("ids") or "").split(",") if part.strip()]
    if not 2 <= len(raw) <= MAX_COMPARE:
        raise BadParameter(
            f"ids must list 2 to {MAX_COMPARE} job ids, comma-separated",
            details=[{"loc": "ids", "msg": f"{len(raw)} given"}],
        )
    ids = []
    for part in raw:
        try:
            ids.append(uuid.UUID(part))
        except ValueError:
            raise BadParameter(
                f"ids: {part!r} is not a job id", details=[{"loc": "ids", "msg": part}]
            ) from None
    return ids


@bp.get("/compare")
def compare() -> Response:
    """Jobs side by side: status, timing, final / best metrics, and where their specs differ."""
    session = db()
    jobs = []
    for job_id in _ids():
        try:
            jobs.append(repository.get_job(session=session, job_id=job_id, owner=current_owner()))
        except JobNotFound:
            raise JobNotFound(
                f"job {job_id} not found", details=[{"loc": "ids", "msg": str(job_id)}]
            ) from None
    rows = []
    for job in jobs:
        glance = metrics_at_a_glance(session, job)
        rows.append(
            {
                "id": str(job.id),
                "kind": job.kind,
                "status": job.status,
                **timing(job),
                "final": glance["final"],
                "best": {k: v["value"] for k, v in glance["best"].items()},
            }
        )
    return jsonify({"jobs": rows, "spec_differences": spec_differences([j.spec for j in jobs])})
