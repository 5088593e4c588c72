"""Per-app services and the per-request database session."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from celery import Celery
from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.feed_hub import FeedHub
from api.inference import PinnedModels
from api.serving import ServingLine
from api.token_cache import TokenCache
from shared.config import Settings
from shared.notify import JobEndSignal
from shared.revocations import Revocations


@dataclass(frozen=True)
class Services:
    """What the app factory builds once and every request shares."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    job_ended: JobEndSignal
    # Bounds the request threads a flood of predictions can hold while they wait.
    predict_waiters: threading.BoundedSemaphore
    # Open live streams of this process, and the readers they share (one per job).
    streams: threading.BoundedSemaphore
    feeds: FeedHub
    # Checked tokens, trusted while no token has been revoked (shared.revocations).
    tokens: TokenCache
    revocations: Revocations
    # Synchronous predictions to warm inference workers over Redis (None: job path only).
    serving: ServingLine | None = None
    # The serving line's model lookups, trusted for a short while.
    pins: PinnedModels = field(default_factory=PinnedModels)


def services() -> Services:
    """The current app's services."""
    svc: Services = current_app.extensions["trainyard"]
    return svc


def db() -> Session:
    """This request's session (opened on first use, closed at teardown)."""
    if "db_session" not in g:
        g.db_session = services().sessions()
    session: Session = g.db_session
    return session


def release_db() -> None:
    """End this request's transaction and return its connection, if it has one (before a
    long wait); a later db() opens a new one."""
    session: Session | None = g.get("db_session")
    if session is not None:
        session.close()


def close_session(exc: BaseException | None) -> None:
    """Roll back whatever the request left uncommitted and release the connection."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()
