"""Queue and task names, routing, and the Celery app both the API and the workers use.

Redis (or the embedded filesystem broker) only carries "work on job X": the task's one
argument is the job id, and the database row holds everything else.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.config import Settings

TRAIN_TASK = "trainyard.train"
INFER_TASK = "trainyard.infer"
SWEEP_TASK = "trainyard.sweep"

QUEUE_DEFAULT = "train"  # device "auto": any worker
QUEUE_GPU = "train.gpu"  # device "cuda": workers that have one
QUEUE_CPU = "train.cpu"  # device "cpu"
ALL_TRAIN_QUEUES = (QUEUE_DEFAULT, QUEUE_GPU, QUEUE_CPU)
# Predictions have their own queue and worker, so they never wait behind training.
QUEUE_INFER = "infer"
# A sweep controller's passes: short, and never behind a training job.
QUEUE_SWEEPS = "sweeps"
ALL_QUEUES = (*ALL_TRAIN_QUEUES, QUEUE_INFER)
TASK_FOR_KIND = {"train": TRAIN_TASK, "infer": INFER_TASK}


def queue_for_device(device: str) -> str:
    """The queue a training job goes to, from its spec's train.device."""
    return {"cuda": QUEUE_GPU, "cpu": QUEUE_CPU}.get(device, QUEUE_DEFAULT)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that keep the database the source of truth (see DESIGN.md)."""
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url(),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Results live in the database; a result backend would be a second truth.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": QUEUE_DEFAULT,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        # Task events for Flower (its /metrics feeds the Grafana dashboard): a few small
        # publishes per task from the worker, which Redis drops while nobody listens.
        "worker_send_task_events": True,
    }
    if config["broker_url"].startswith("filesystem"):
        folder = settings.broker_folder()
        for sub in ("out", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "out"),
            "data_folder_out": str(folder / "out"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    elif config["broker_url"].startswith("redis"):
        # A message whose worker died is redelivered after this long (acks_late).
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config


def make_celery(settings: Settings, *, include: list[str] | None = None) -> Celery:
    """A Celery app on the configured broker; the API uses it only to send messages."""
    app = Celery("trainyard", include=include or [])
    app.conf.update(celery_config(settings))
    return app


def consumed_queues(celery: Any) -> set[str]:
    """The queues a worker's app consumes (none outside a worker process)."""
    try:
        return set(celery.amqp.queues.consume_from)
    except AttributeError:
        return set()


def send_job(app: Celery, *, job_id: str, kind: str, queue: str) -> None:
    """Queue "work on job X" (train or infer by kind); raises if the broker is unreachable
    (the sweeper re-sends later)."""
    app.send_task(TASK_FOR_KIND[kind], args=[job_id], queue=queue, retry=False)


def send_sweep_pass(app: Celery, *, sweep_id: str) -> None:
    """Ask for a pass of the sweep's controller (a message carries only the sweep id)."""
    app.send_task(SWEEP_TASK, args=[sweep_id], queue=QUEUE_SWEEPS, retry=False)
