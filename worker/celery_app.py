"""The worker's Celery app: `celery -A worker.celery_app worker` (or `trainyard worker`)."""

from __future__ import annotations

from shared.config import get_settings
from shared.queues import make_celery
from worker import presence, serving_signals, shutdown  # noqa: F401  (connect their signals)

app = make_celery(get_settings(), include=["worker.tasks", "worker.sweep_task"])
