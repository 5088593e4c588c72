"""A job's summary, and jobs side by side."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.auth import current_owner
from api.context import db, services
from api.contract import answers, contract, query_model
from api.ownership import owned_job
from api.reports import metrics_at_a_glance, model_description, spec_differences, timing
from api.serialize import job_json
from shared import repository
from shared.contract.queries import CompareQuery, NoQuery
from shared.contract.responses import Comparison, JobSummary
from shared.errors import JobNotFound
from shared.models import Job

bp = Blueprint("reports", __name__)
TAGS = ["results"]


def _training_job(job: Job) -> Job | None:
    """The job that trained the model: the job itself, or an inference job's model job."""
    if job.kind == "train":
        return job
    if job.source_job_id is None:
        return None
    return repository.get_job(session=db(), job_id=job.source_job_id)


@bp.get("/jobs/<job_id>/summary")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_404", HTTP_200=JobSummary),
    tags=TAGS,
    operation_id="getJobSummary",
)
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


@bp.get("/compare")
@contract.validate(query=CompareQuery, resp=answers("HTTP_404", HTTP_200=Comparison), tags=TAGS)
def compare() -> Response:
    """Jobs side by side: status, timing, final / best metrics, and where their specs differ."""
    session = db()
    jobs = []
    for job_id in query_model(CompareQuery).job_ids():
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
