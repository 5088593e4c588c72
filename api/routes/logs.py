"""A job's captured log lines (worker.job_log): what it printed, warned and failed with,
oldest first, a page at a time. The live stream sends the same lines as `logs` events."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from api.context import db
from api.contract import answers, contract, query_model
from api.ownership import owned_job
from shared.contract.queries import LogQuery
from shared.contract.responses import LogPage
from shared.models import JobLog

bp = Blueprint("logs", __name__)
PAGE = 500


@bp.get("/jobs/<job_id>/logs")
@contract.validate(
    query=LogQuery,
    resp=answers("HTTP_404", HTTP_200=LogPage),
    tags=["results"],
    operation_id="getJobLogs",
)
def logs(job_id: str) -> Response:
    """The job's log lines after `after`: an error shows its first line only (the
    traceback stays in the worker's log)."""
    asked: LogQuery = query_model(LogQuery)
    job = owned_job(job_id)
    limit = asked.limit or PAGE
    rows = (
        db()
        .scalars(
            select(JobLog)
            .where(JobLog.job_id == job.id, JobLog.id > (asked.after or 0))
            .order_by(JobLog.id)
            .limit(limit + 1)
        )
        .all()
    )
    page = rows[:limit]
    lines = [
        {"id": r.id, "at": r.at.isoformat(), "attempt": r.attempt, "level": r.level,
         "source": r.source, "line": r.line}
        for r in page
    ]  # fmt: skip
    return jsonify({"logs": lines, "next_after": page[-1].id if len(rows) > limit else None})
