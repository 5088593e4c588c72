"""The owner's quota on queued training jobs: checked at submit and by the sweep controller
before it queues a trial."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.errors import QuotaExceeded
from shared.models import Job, JobStatus

# A queued job waits for a worker: a minute is a fair guess at when one slot frees up.
QUEUED_RETRY_AFTER_SECONDS = 60


def check_queued_quota(*, session: Session, owner: str, settings: Settings) -> None:
    """429 when `owner` already has TRAINYARD_QUOTA_MAX_QUEUED jobs waiting."""
    quota = settings.quota_max_queued
    if not quota:
        return
    queued = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner == owner, Job.status == JobStatus.QUEUED, Job.kind == "train")
    )
    if queued is not None and queued >= quota:
        raise QuotaExceeded(
            f"{queued} training jobs of yours are queued; the quota is {quota} "
            "(TRAINYARD_QUOTA_MAX_QUEUED): wait for some to start, or cancel some",
            quota="max_queued",
            retry_after=QUEUED_RETRY_AFTER_SECONDS,
        )
