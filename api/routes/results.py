"""Metrics and layer traces of a job."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, jsonify

from api.context import db, services
from api.contract import answers, contract, query_model, within
from api.ownership import owned_job
from api.serialize import trace_json
from shared import repository
from shared.contract.queries import MetricsQuery, TracesQuery
from shared.contract.responses import Metrics, Traces
from shared.jsonvalues import json_float
from shared.models import LayerTrace, RankTrace

bp = Blueprint("results", __name__)


TAGS = ["results"]


def _limit(asked: int | None) -> int:
    max_rows = services().settings.max_result_rows
    return within("limit", asked, max_rows, max_rows)


@bp.get("/jobs/<job_id>/metrics")
@contract.validate(
    query=MetricsQuery,
    resp=answers("HTTP_404", HTTP_200=Metrics),
    tags=TAGS,
    operation_id="getJobMetrics",
)
def metrics(job_id: str) -> Response:
    """Metric series grouped by (name, split): points of (step, epoch, value).

    `max_points` thins each series in the database (before `limit`), keeping every
    bucket's first, lowest and highest point, so a loss spike stays visible in a plot of
    a million steps and the end of a long series is never cut.
    """
    asked: MetricsQuery = query_model(MetricsQuery)
    session = db()
    job = owned_job(job_id)
    limit = _limit(asked.limit)
    rows = repository.list_metrics(
        session=session,
        job_id=job.id,
        name=asked.name,
        split=asked.split,
        from_step=asked.from_step,
        to_step=asked.to_step,
        limit=limit,
        max_points=asked.max_points,
    )
    truncated = len(rows) == limit
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        point = {"step": row.step, "epoch": row.epoch, "value": json_float(row.value)}
        series[(row.name, row.split)].append(point)
    body = [{"name": n, "split": s, "points": pts} for (n, s), pts in series.items()]
    return jsonify({"job_id": str(job.id), "series": body, "truncated": truncated})


@bp.get("/jobs/<job_id>/traces")
@contract.validate(
    query=TracesQuery,
    resp=answers("HTTP_404", HTTP_200=Traces),
    tags=TAGS,
    operation_id="getJobTraces",
)
def traces(job_id: str) -> Response:
    """Trace rows by layer glob, kind and inclusive step range (or one step: `at_step`);
    with `rank`, that rank's own rows of a distributed job (hooks.per_rank).

    `stat` keeps one statistic per row; `max_points` thins each (layer, kind) series,
    keeping every bucket's first, lowest and highest value of `stat` (default norm).
    """
    asked: TracesQuery = query_model(TracesQuery)
    session = db()
    job = owned_job(job_id)
    limit = _limit(asked.limit)
    at_step, stat, rank = asked.at_step, asked.stat, asked.rank
    thin_on = stat or "norm"
    if rank is not None and not hasattr(RankTrace, thin_on):  # a rank has no update ratio
        thin_on = "norm"
    query: dict[str, Any] = {
        "session": session,
        "job_id": job.id,
        "layer": asked.layer,
        "kind": asked.kind,
        "from_step": at_step if at_step is not None else asked.from_step,
        "to_step": at_step if at_step is not None else asked.to_step,
        "limit": limit,
        "max_points": asked.max_points,
        "stat": thin_on,
    }
    rows: Sequence[LayerTrace | RankTrace] = (
        repository.list_traces(**query)
        if rank is None
        else repository.list_rank_traces(**query, rank=rank)
    )
    truncated = len(rows) == limit
    body = [trace_json(r, only=stat) for r in rows]
    return jsonify({"job_id": str(job.id), "traces": body, "truncated": truncated})
