"""Starts the serving line in an inference worker, and stops it with the worker.

A worker that consumes the `infer` queue, on a Redis broker, with TRAINYARD_PREDICT_SERVING
on, runs one PredictionServer thread next to Celery's own consumer: Celery keeps running
`infer` jobs (batch inference, requests with an Idempotency-Key), the thread answers
synchronous predictions. Both share the worker's model cache.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown

from shared.config import get_settings, is_redis_url
from shared.infer_inputs import InputLimits
from shared.queues import QUEUE_INFER, consumed_queues
from worker.prediction_log import PredictionRecorder
from worker.serving import PredictionServer
from worker.serving_journal import Journal

log = logging.getLogger(__name__)

_running: list[tuple[PredictionServer, PredictionRecorder]] = []


def _forks_children(consumer: Any) -> bool:
    """A prefork pool forks new children as old ones exit: a fork while the serving
    thread (and torch's own threads) run may copy a held lock into the child."""
    return type(getattr(consumer, "pool", None)).__module__ == "celery.concurrency.prefork"


def _start(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    url = settings.resolved_broker_url()
    if not settings.predict_serving or not is_redis_url(url):
        return
    if QUEUE_INFER not in consumed_queues(getattr(sender, "app", None)):
        return
    if _forks_children(sender):
        log.warning(
            "no serving line in a prefork worker (it forks while the line's threads run); "
            "predictions take the job path. Run the inference worker with -P solo or threads"
        )
        return
    from worker import tasks  # the task module's sessions, model cache and loader

    # Every call is bounded: the longest BLPOP is ALIVE_REFRESH_SECONDS.
    client = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0)
    journal = Journal(client, tasks.worker_name())
    recorder = PredictionRecorder(
        tasks.record_sessions(),
        flush_seconds=settings.predict_record_flush_ms / 1000,
        outage_seconds=settings.db_outage_seconds,
        on_done=journal.done,
    ).start()
    for record in journal.recover():  # answered before a crash, never written
        recorder.add(record)
    server = PredictionServer(
        client,
        queue=QUEUE_INFER,
        worker=tasks.worker_name(),
        cache=tasks.model_cache(),
        load=tasks.load_for_inference,
        recorder=recorder,
        limits=InputLimits.of(settings),
        max_batch=settings.predict_max_batch,
        batch_wait_seconds=settings.predict_batch_wait_ms / 1000,
        expire_seconds=settings.predict_expire_seconds,
        journal=journal,
    ).start()
    _running.append((server, recorder))
    log.info(
        "serving predictions from %s (batches of up to %d samples, %.1f ms wait)",
        QUEUE_INFER, settings.predict_max_batch, settings.predict_batch_wait_ms,
    )  # fmt: skip


def _stop(**_: Any) -> None:
    while _running:
        server, recorder = _running.pop()
        # A model load in hand may take a while: its answers and records come first.
        if not server.stop(timeout=60.0):
            log.error("the serving thread did not stop; its batch in hand is not recorded")
        recorder.close(timeout=get_settings().db_outage_seconds)


worker_ready.connect(_start, weak=False)
worker_shutdown.connect(_stop, weak=False)
