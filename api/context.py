"""Per-app services and the per-request database session."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from celery import Celery
from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.notify import JobEndSignal


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


def close_session(exc: BaseException | None) -> None:
    """Roll back whatever the request left uncommitted and release the connection."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()
