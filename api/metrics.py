"""Prometheus metrics (prometheus-client): the API's requests, and the cluster as the
database and Redis see it at scrape time.

- `trainyard_http_request_duration_seconds{method,route,status}`: a histogram per route
  rule (not per URL: job ids would make a series each); `trainyard_api_open_streams`, the
  live streams open now. Under gunicorn the worker
  processes share it through files in PROMETHEUS_MULTIPROC_DIR (`trainyard api` and
  `serve` make that folder); without it, each process counts its own.
- Read at scrape time, so every API process reports the same values:
  `trainyard_jobs{status,queue,kind}` from the jobs table; `trainyard_queue_depth{queue}`
  (messages waiting in Redis); from the workers' presence records (shared/presence.py)
  `trainyard_workers{device,state}`, `trainyard_job_steps_per_second{job_id,worker}` and
  `trainyard_writer_backlog_rows{worker}`; `trainyard_rows_written_total{table}`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import is_redis_url
from shared.models import Job
from shared.presence import read_workers, rows_written
from shared.queues import ALL_QUEUES

log = logging.getLogger(__name__)

REQUEST_SECONDS = Histogram(
    "trainyard_http_request_duration_seconds",
    "Time the API took to answer, by route rule, method and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=None,  # exposed through exposition() only
)
OPEN_STREAMS = Gauge(
    "trainyard_api_open_streams",
    "Live streams (GET /jobs/<id>/stream) open on the API processes",
    multiprocess_mode="livesum",  # the processes' counts added, a dead process's dropped
    registry=None,
)
# The client names the method: anything else counts as "other", so no client can make
# series without end.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>".
PRIORITY_STEPS = (3, 6, 9)


def install_timing(app: Flask) -> None:
    """Time every request, by its route rule."""

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            method = request.method if request.method in METHODS else "other"
            REQUEST_SECONDS.labels(method, rule, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response


class ClusterCollector(Collector):
    """Jobs, queues and workers, read when Prometheus scrapes."""

    def __init__(self, sessions: sessionmaker[Session], broker_url: str) -> None:
        self._sessions = sessions
        self._redis = (
            redis.Redis.from_url(broker_url, socket_timeout=3.0, socket_connect_timeout=3.0)
            if is_redis_url(broker_url)
            else None
        )

    def collect(self) -> Iterator[Metric]:
        """What can be read now; a source that is away is `trainyard_source_up 0`, and
        the rest (the request latencies among them) still goes out."""
        up = GaugeMetricFamily(
            "trainyard_source_up", "Whether this scrape could read the source", labels=["source"]
        )
        try:
            jobs = self._jobs()
        except SQLAlchemyError as exc:
            log.warning("metrics: database unreachable (%s)", type(exc).__name__)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            yield jobs
        if self._redis is not None:
            try:
                broker = list(self._broker(self._redis))
            except redis.RedisError as exc:
                log.warning("metrics: Redis unreachable (%s)", exc)
                up.add_metric(["redis"], 0)
            else:
                up.add_metric(["redis"], 1)
                yield from broker
        yield up

    def _jobs(self) -> Metric:
        family = GaugeMetricFamily(
            "trainyard_jobs", "Jobs by status, queue and kind", labels=["status", "queue", "kind"]
        )
        query = select(Job.status, Job.queue, Job.kind, func.count()).group_by(
            Job.status, Job.queue, Job.kind
        )
        with self._sessions() as session:
            for status, queue, kind, count in session.execute(query):
                family.add_metric([str(status), queue, str(kind)], count)
        return family

    def _broker(self, client: Any) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "trainyard_queue_depth", "Messages waiting in each queue", labels=["queue"]
        )
        pipe = client.pipeline(transaction=False)
        for queue in ALL_QUEUES:
            pipe.llen(queue)
            for step in PRIORITY_STEPS:
                pipe.llen(f"{queue}\x06\x16{step}")
        lengths = pipe.execute()
        per_queue = len(PRIORITY_STEPS) + 1
        for index, queue in enumerate(ALL_QUEUES):
            depth.add_metric([queue], sum(lengths[index * per_queue : (index + 1) * per_queue]))
        yield depth
        yield from _worker_metrics(read_workers(client))
        rows = CounterMetricFamily(
            "trainyard_rows_written", "Rows the workers' writers committed", labels=["table"]
        )
        for table, count in sorted(rows_written(client).items()):
            rows.add_metric([table], count)
        yield rows


def _worker_metrics(records: list[Any]) -> Iterator[Metric]:
    workers = GaugeMetricFamily(
        "trainyard_workers", "Live workers by device and state", labels=["device", "state"]
    )
    counts = {(device, state): 0 for device in ("cpu", "cuda") for state in ("idle", "busy")}
    rates = GaugeMetricFamily(
        "trainyard_job_steps_per_second",
        "Training steps per second of each running job, over its worker's last heartbeat",
        labels=["job_id", "worker"],
    )
    backlog = GaugeMetricFamily(
        "trainyard_writer_backlog_rows",
        "Metric and trace rows a worker holds that are not committed yet",
        labels=["worker"],
    )
    for record in records:
        key = (record.device, "busy" if record.busy else "idle")
        counts[key] += 1
        for job_id, rate in record.steps_per_second.items():
            rates.add_metric([job_id, record.name], rate)
        backlog.add_metric([record.name], record.writer_backlog)
    for (device, state), count in sorted(counts.items()):
        workers.add_metric([device, state], count)
    yield from (workers, rates, backlog)


def exposition(cluster: ClusterCollector) -> tuple[bytes, str]:
    """The metrics text and its content type."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # every worker process
    else:
        registry.register(REQUEST_SECONDS)
        registry.register(OPEN_STREAMS)
    registry.register(cluster)
    return generate_latest(registry), CONTENT_TYPE_LATEST
