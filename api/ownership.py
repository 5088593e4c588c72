"""The caller's jobs: an id from the URL, looked up for the token's owner only."""

from __future__ import annotations

import uuid

from api.auth import current_owner
from api.context import db
from shared import repository
from shared.errors import JobNotFound
from shared.models import Job


def parse_job_id(raw: str) -> uuid.UUID:
    """A job id from the URL; a malformed one is 'not found' like any unknown id."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound(f"job {raw!r} not found") from None


def owned_job(raw_id: str) -> Job:
    """The caller's job with this URL id: 404 alike for a malformed id, an unknown one and
    another owner's, so an id reveals nothing about other owners."""
    return repository.get_job(session=db(), job_id=parse_job_id(raw_id), owner=current_owner())
