"""A worker's presence: a heartbeat file for its container's healthcheck, and a record
in Redis that says what it is and does (shared/presence.py).

A thread beats every TRAINYARD_HEARTBEAT_SECONDS. A beat PINGs the broker, writes the
record and, only when both worked, touches TRAINYARD_HEARTBEAT_FILE: so the file's
age (`trainyard health heartbeat`) means "this process is alive and reaches its broker".
Celery's own `inspect ping` cannot stand in: the solo pool trains on the thread that
would answer it. Started on Celery's worker_ready, in worker processes only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun, worker_ready, worker_shutdown

from shared.config import get_settings, is_redis_url
from shared.presence import ROWS_KEY_PREFIX, WorkerRecord, touch_heartbeat, worker_key
from shared.queues import QUEUE_GPU, TRAIN_TASK, consumed_queues
from worker import activity
from worker.shutdown import SHUTTING_DOWN

log = logging.getLogger(__name__)


class Presence:
    """Beats for one worker process: `start()`, `beat()` (what the thread runs), `stop()`."""

    def __init__(
        self,
        *,
        client: Any,
        name: str,
        queues: list[str],
        heartbeat_file: Path | None,
        every_seconds: float,
    ) -> None:
        self._client = client
        self.name = name
        self.queues = sorted(queues)
        self.device = "cuda" if QUEUE_GPU in queues else "cpu"
        self.heartbeat_file = heartbeat_file
        self.every_seconds = every_seconds
        self._last: dict[str, tuple[int, float]] = {}  # job id -> (step, monotonic time)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> WorkerRecord:
        """This worker now; steps/s from the progress seen one beat ago."""
        now = time.monotonic()
        jobs = activity.running_jobs()
        rates = {}
        for job_id, step in jobs.items():
            before = self._last.get(job_id)
            if before is not None and now > before[1] and step >= before[0]:
                rates[job_id] = round((step - before[0]) / (now - before[1]), 3)
        self._last = {job_id: (step, now) for job_id, step in jobs.items()}
        return WorkerRecord(
            name=self.name, device=self.device, queues=self.queues,
            # A worker shutting down takes no new job: not idle for the GPU hand-off.
            busy=bool(jobs) or activity.training() or SHUTTING_DOWN.is_set(),
            jobs=jobs, steps_per_second=rates, writer_backlog=activity.writer_backlog(),
            at=time.time(),
        )  # fmt: skip

    def beat(self) -> None:
        """Write the record and the row counts, then touch the heartbeat file."""
        committed = activity.take_committed()
        try:
            self._publish(self.record(), committed)
        except Exception:
            activity.give_back_committed(committed)
            raise
        touch_heartbeat(self.heartbeat_file)

    def _publish(self, record: WorkerRecord, committed: Counter[str]) -> None:
        expire = max(3, round(3 * self.every_seconds))
        pipe = self._client.pipeline(transaction=False)
        pipe.set(worker_key(self.name), record.model_dump_json(), ex=expire)
        for table, count in committed.items():
            pipe.incrby(ROWS_KEY_PREFIX + table, count)
        pipe.execute()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="worker-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and withdraw the record (a stopped worker is not idle)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):  # else it expires by itself
            self._client.delete(worker_key(self.name))
        self._client.close()

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:  # the broker is down: no touch, the healthcheck sees it
                log.warning("worker presence: beat failed (%s)", exc)
            if self._stop.wait(self.every_seconds):
                return


_running: list[Presence] = []


def _start(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    url = settings.resolved_broker_url()
    if not is_redis_url(url):
        return  # the embedded broker: one machine, nothing to tell
    from worker.tasks import worker_name

    presence = Presence(
        client=redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0),
        name=worker_name(),
        queues=sorted(consumed_queues(getattr(sender, "app", None))),
        heartbeat_file=settings.heartbeat_file,
        every_seconds=settings.heartbeat_seconds,
    )
    presence.start()
    _running.append(presence)
    log.info("worker %s: presence as a %s worker on %s", presence.name, presence.device,
             ",".join(presence.queues))  # fmt: skip


def _stop(**_: Any) -> None:
    while _running:
        _running.pop().stop()


def _task_started(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == TRAIN_TASK:
        activity.task_started()


def _task_ended(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == TRAIN_TASK:
        activity.task_ended()


task_prerun.connect(_task_started, weak=False)
task_postrun.connect(_task_ended, weak=False)
worker_ready.connect(_start, weak=False)
worker_shutdown.connect(_stop, weak=False)
