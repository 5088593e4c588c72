"""Idempotency-Key on job submissions: a retried POST gets the job the first one made.

A client that lost the answer to `POST /jobs` (a dropped connection, a restarted API)
sends the same request again with the same `Idempotency-Key` header and gets the first
job back, never a second one. The key is the caller's (unique per owner); reusing it for a
different request is a 422. Concurrent requests with one key make one job: the unique
index (owner, idempotency_key) refuses the second row, which then answers with the first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from flask import request
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.errors import BadParameter, IdempotencyConflict
from shared.models import Job

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Idempotency:
    """The request's key and a digest of what it asked for."""

    key: str
    request_sha256: str


def from_request(body: dict[str, Any]) -> Idempotency | None:
    """The Idempotency-Key of this request with the digest of its path and body, if sent."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise BadParameter(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            details=[{"loc": HEADER, "msg": "invalid"}],
        )
    canonical = json.dumps({"path": request.path, "body": body}, sort_keys=True)
    return Idempotency(key, hashlib.sha256(canonical.encode()).hexdigest())


def replayed(session: Session, owner: str, idempotency: Idempotency | None) -> Job | None:
    """The job an earlier request with this key made, if any (422 if it asked otherwise)."""
    if idempotency is None:
        return None
    job = session.scalars(
        select(Job).where(Job.owner == owner, Job.idempotency_key == idempotency.key)
    ).first()
    if job is not None and job.request_sha256 != idempotency.request_sha256:
        raise IdempotencyConflict(
            f"{HEADER} {idempotency.key!r} was used for a different request (job {job.id}); "
            "use a new key for a new request",
            details=[{"loc": HEADER, "msg": "used for a different request"}],
        )
    return job
