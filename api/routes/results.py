"""Metrics and layer traces of a job."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.context import db, services
from api.downsample import downsample
from api.ownership import owned_job
from api.params import choice_arg, int_arg
from api.serialize import TRACE_STATS, trace_json
from shared import repository
from shared.errors import BadParameter
from shared.jsonvalues import json_float
from shared.models import LayerTrace, RankTrace
from shared.spec.hooks import HOOK_KINDS

bp = Blueprint("results", __name__)


def _limit() -> int:
    max_rows = services().settings.max_result_rows
    limit = int_arg("limit", default=max_rows, lo=1, hi=max_rows)
    assert limit is not None
    return limit


@bp.get("/jobs/<job_id>/metrics")
def metrics(job_id: str) -> Response:
    """Metric series grouped by (name, split): points of (step, epoch, value).

    `max_points` thins each series server-side, keeping every bucket's first, lowest and
    highest point, so a loss spike stays visible in a plot of a million steps.
    """
    session = db()
    job = owned_job(job_id)
    limit = _limit()
    max_points = int_arg("max_points", default=None, lo=1, hi=100_000)
    rows = repository.list_metrics(
        session=session,
        job_id=job.id,
        name=request.args.get("name") or None,
        split=request.args.get("split") or None,
        from_step=int_arg("from_step", default=None),
        to_step=int_arg("to_step", default=None),
        limit=limit,
    )
    truncated = len(rows) == limit
    if max_points is not None:
        rows = downsample(
            rows,
            max_points=max_points,
            step=lambda r: r.step,
            series=lambda r: (r.name, r.split),
            value=lambda r: r.value,
        )
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        point = {"step": row.step, "epoch": row.epoch, "value": json_float(row.value)}
        series[(row.name, row.split)].append(point)
    body = [{"name": n, "split": s, "points": pts} for (n, s), pts in series.items()]
    return jsonify({"job_id": str(job.id), "series": body, "truncated": truncated})


@bp.get("/jobs/<job_id>/traces")
def traces(job_id: str) -> Response:
    """Trace rows by layer glob, kind and inclusive step range (or one step: `at_step`);
    with `rank`, that rank's own rows of a distributed job (hooks.per_rank).

    `stat` keeps one statistic per row; `max_points` thins each (layer, kind) series,
    keeping every bucket's first, lowest and highest value of `stat` (default norm).
    """
    session = db()
    job = owned_job(job_id)
    limit = _limit()
    at_step = int_arg("at_step", default=None)
    if at_step is not None and (request.args.get("from_step") or request.args.get("to_step")):
        raise BadParameter(
            "give at_step or a from_step / to_step range, not both",
            details=[{"loc": "at_step"}],
        )
    stat = choice_arg("stat", TRACE_STATS)
    max_points = int_arg("max_points", default=None, lo=1, hi=100_000)
    # `rank`: one rank's own rows of a distributed job (hooks.per_rank), not the batch's.
    rank = int_arg("rank", default=None, lo=0, hi=100_000)
    query: dict[str, Any] = {
        "session": session,
        "job_id": job.id,
        "layer": request.args.get("layer") or None,
        "kind": choice_arg("kind", HOOK_KINDS),
        "from_step": at_step if at_step is not None else int_arg("from_step", default=None),
        "to_step": at_step if at_step is not None else int_arg("to_step", default=None),
        "limit": limit,
    }
    rows: Sequence[LayerTrace | RankTrace] = (
        repository.list_traces(**query)
        if rank is None
        else repository.list_rank_traces(**query, rank=rank)
    )
    truncated = len(rows) == limit
    if max_points is not None:
        column = stat or "norm"
        rows = downsample(
            rows,
            max_points=max_points,
            step=lambda r: r.step,
            series=lambda r: (r.layer, r.kind),
            value=lambda r: getattr(r, column, None),  # a rank row has no update_ratio
        )
    body = [trace_json(r, only=stat) for r in rows]
    return jsonify({"job_id": str(job.id), "traces": body, "truncated": truncated})
