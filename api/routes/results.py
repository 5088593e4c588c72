"""Metrics and layer traces of a job."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import current_owner
from api.context import db, services
from api.params import choice_arg, int_arg
from api.routes.jobs import parse_job_id
from api.serialize import trace_json
from shared import repository
from shared.jsonvalues import json_float

bp = Blueprint("results", __name__)

TRACE_KINDS = ("forward_pre", "forward", "backward", "param_grad", "weights")


def _limit() -> int:
    max_rows = services().settings.max_result_rows
    limit = int_arg("limit", default=max_rows, lo=1, hi=max_rows)
    assert limit is not None
    return limit


@bp.get("/jobs/<job_id>/metrics")
def metrics(job_id: str) -> Response:
    """Metric series grouped by (name, split): points of (step, epoch, value)."""
    session = db()
    job = repository.get_job(session=session, job_id=parse_job_id(job_id), owner=current_owner())
    limit = _limit()
    rows = repository.list_metrics(
        session=session,
        job_id=job.id,
        name=request.args.get("name") or None,
        split=request.args.get("split") or None,
        from_step=int_arg("from_step", default=None),
        to_step=int_arg("to_step", default=None),
        limit=limit,
    )
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        point = {"step": row.step, "epoch": row.epoch, "value": json_float(row.value)}
        series[(row.name, row.split)].append(point)
    body = [{"name": n, "split": s, "points": pts} for (n, s), pts in series.items()]
    return jsonify({"job_id": str(job.id), "series": body, "truncated": len(rows) == limit})


@bp.get("/jobs/<job_id>/traces")
def traces(job_id: str) -> Response:
    """Layer trace rows filtered by layer, kind and an inclusive step range."""
    session = db()
    job = repository.get_job(session=session, job_id=parse_job_id(job_id), owner=current_owner())
    limit = _limit()
    rows = repository.list_traces(
        session=session,
        job_id=job.id,
        layer=request.args.get("layer") or None,
        kind=choice_arg("kind", TRACE_KINDS),
        from_step=int_arg("from_step", default=None),
        to_step=int_arg("to_step", default=None),
        limit=limit,
    )
    body = [trace_json(r) for r in rows]
    return jsonify({"job_id": str(job.id), "traces": body, "truncated": len(rows) == limit})
