"""Metrics and layer traces of a job."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import current_owner
from api.context import db, services
from api.routes.jobs import parse_job_id
from api.serialize import json_float, trace_json
from shared import repository
from shared.errors import SpecError

bp = Blueprint("results", __name__)

TRACE_KINDS = ("forward_pre", "forward", "backward", "param_grad", "weights")


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise SpecError(
            f"{name} must be an integer, got {raw!r}", details=[{"loc": name}]
        ) from None


@bp.get("/jobs/<job_id>/metrics")
def metrics(job_id: str) -> Response:
    """Metric series grouped by (name, split): points of (step, epoch, value)."""
    session = db()
    job = repository.get_job(session=session, job_id=parse_job_id(job_id), owner=current_owner())
    rows = repository.list_metrics(
        session=session,
        job_id=job.id,
        name=request.args.get("name") or None,
        split=request.args.get("split") or None,
    )
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        point = {"step": row.step, "epoch": row.epoch, "value": json_float(row.value)}
        series[(row.name, row.split)].append(point)
    body = [{"name": n, "split": s, "points": pts} for (n, s), pts in series.items()]
    return jsonify({"job_id": str(job.id), "series": body})


@bp.get("/jobs/<job_id>/traces")
def traces(job_id: str) -> Response:
    """Layer trace rows filtered by layer, kind and an inclusive step range."""
    session = db()
    job = repository.get_job(session=session, job_id=parse_job_id(job_id), owner=current_owner())
    kind = request.args.get("kind") or None
    if kind is not None and kind not in TRACE_KINDS:
        raise SpecError(f"kind must be one of {list(TRACE_KINDS)}", details=[{"loc": "kind"}])
    max_rows = services().settings.max_trace_rows
    limit = _int_arg("limit") or max_rows
    if not 1 <= limit <= max_rows:
        raise SpecError(f"limit must be 1..{max_rows}", details=[{"loc": "limit"}])
    rows = repository.list_traces(
        session=session,
        job_id=job.id,
        layer=request.args.get("layer") or None,
        kind=kind,
        from_step=_int_arg("from_step"),
        to_step=_int_arg("to_step"),
        limit=limit,
    )
    return jsonify(
        {
            "job_id": str(job.id),
            "traces": [trace_json(r) for r in rows],
            "truncated": len(rows) == limit,
        }
    )
