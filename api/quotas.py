"""Per-owner quotas checked at submit time, and the per-token request rate limit.

Quotas come from settings (TRAINYARD_QUOTA_*); over one, the answer is 429 with
Retry-After and an error naming the quota. The running-jobs quota is kept by the
workers' claim order instead (an owner at its limit waits its turn), and the
wall-clock quota by the worker (worker/training/time_limit.py).
"""

from __future__ import annotations

import hashlib

from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded

from api.errors import problem
from shared.config import Settings
from shared.quotas import check_queued_quota

__all__ = ["check_queued_quota", "install_rate_limit"]


def _token_key() -> str:
    """Requests are counted per bearer token (its hash: Redis never sees a token), and per
    client address without one."""
    header = request.headers.get("Authorization", "")
    if header:
        return "token:" + hashlib.sha256(header.encode()).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "unknown")


def install_rate_limit(app: Flask, settings: Settings) -> Limiter | None:
    """flask-limiter on every route but the health probes, counting in Redis when the
    broker is Redis (all API processes share the count), else in this process."""
    if not settings.rate_limit.strip():
        return None
    broker = settings.resolved_broker_url()
    limiter = Limiter(
        key_func=_token_key,
        app=app,
        # One count per token over every route (default_limits would count per route).
        application_limits=[settings.rate_limit],
        storage_uri=broker if broker.startswith(("redis://", "rediss://")) else "memory://",
        strategy="sliding-window-counter",  # one round trip a request, not three
        headers_enabled=True,  # X-RateLimit-* and Retry-After on a 429
        swallow_errors=True,  # Redis down: requests go on (and answer 503 where it matters)
        key_prefix="trainyard-rate",
    )

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded) -> tuple[Response, int]:
        message = f"rate limit of {exc.description} per token reached (TRAINYARD_RATE_LIMIT)"
        return problem(
            429, "rate_limited", message, [{"loc": "rate_limit", "msg": exc.description}]
        )

    return limiter
