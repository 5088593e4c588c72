"""PNG plots of a job, cached per job state: a finished job's plots render once, a running
job's again only after its state (status, progress step) moved on."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch
from flask import Blueprint, Response, current_app, request
from sqlalchemy.orm import Session

from api import charts
from api.context import db, services
from api.contract import answers, contract
from api.ownership import owned_job
from shared import repository
from shared.contract.queries import NoQuery
from shared.errors import NotFound, SpecError
from shared.models import Job, LayerTrace, Metric
from shared.net.build import build_tree
from shared.net.order import LayerOrder
from shared.spec_check import load_stored_spec

bp = Blueprint("plots", __name__)

CACHE_ENTRIES = 64  # rendered PNGs kept per process (tens of KB each)


class PngCache:
    """A small thread-safe LRU of rendered PNG bytes (gunicorn runs request threads)."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def put(self, key: str, png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self._entries:
                self._items.popitem(last=False)


@bp.get("/jobs/<job_id>/plots/<name>.png")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_200", "HTTP_304", "HTTP_404"),  # PNG bytes (api.routes.docs says so)
    tags=["results"],
    operation_id="getJobPlot",
)
def plot(job_id: str, name: str) -> Response:
    """One plot of the job as PNG; ETag / If-None-Match answer 304 while the job stands still."""
    if name not in charts.PLOTS:
        raise NotFound(
            f"no plot named {name!r}; the plots are {', '.join(charts.PLOTS)}",
            details=[{"loc": "name", "msg": f"one of {list(charts.PLOTS)}"}],
        )
    session = db()
    job = owned_job(job_id)
    key = state_key(job, name)
    # no-cache: clients keep the image but ask each time; a 304 costs one job-row read.
    headers = {"ETag": f'"{key}"', "Cache-Control": "private, no-cache"}
    if request.if_none_match.contains_weak(key):
        return Response(status=304, headers=headers)
    cache = _cache()
    png = cache.get(key)
    if png is None:
        png = charts.render(name, _plot_data(session, job, name))
        cache.put(key, png)
    return Response(png, mimetype="image/png", headers=headers)


def state_key(job: Job, name: str) -> str:
    """What a plot depends on: new rows always come with a new progress step or status."""
    finished = job.finished_at.isoformat() if job.finished_at else ""
    parts = (charts.VERSION, job.id, job.status, job.attempt, job.progress_step, finished, name)
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _cache() -> PngCache:
    # Per app, not per module: two apps in one process (tests) never share images.
    cache: PngCache = current_app.extensions.setdefault("trainyard.plots", PngCache(CACHE_ENTRIES))
    return cache


def _plot_data(session: Session, job: Job, name: str) -> charts.PlotData:
    limit = services().settings.max_result_rows
    truncated = False  # a query that returns `limit` rows may have left some out
    metrics: list[Metric] = []
    chart = charts.PLOTS[name]
    for split, metric in chart.metrics:
        # Thinned in the database: a million-step series is drawn whole, end included.
        rows = repository.list_metrics(
            session=session, job_id=job.id, split=split, name=metric, limit=limit,
            max_points=charts.LINE_BUCKETS,
        )  # fmt: skip
        truncated |= len(rows) >= limit
        metrics += rows
    traces: list[LayerTrace] = []
    for kind in chart.trace_kinds:
        traces = repository.list_traces(
            session=session, job_id=job.id, kind=kind, limit=limit,
            max_points=charts.LINE_BUCKETS, stat=chart.trace_stat,
        )  # fmt: skip
        if traces:
            truncated |= len(traces) >= limit
            break
    return charts.PlotData(
        job=str(job.id),
        metrics=metrics,
        traces=traces,
        layer_order=model_order(job) if traces else LayerOrder(),
        last_step=job.progress_step,
        truncated=truncated,
    )


def model_order(job: Job) -> LayerOrder:
    """The order of the job's model (module names, then parameter names); empty when its
    spec no longer builds (e.g. an operator layer since removed): then rows keep their own.

    The database returns trace rows sorted by name, so the spec is the only record of the
    model's order. Built on the meta device: no memory, no weights, milliseconds.
    """
    try:
        spec = load_stored_spec(job.spec, job_id=job.id)
        with torch.device("meta"):
            model, _ = build_tree(spec.model)
    except SpecError:
        return LayerOrder()
    return LayerOrder.of(model)
