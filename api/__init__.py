"""Flask app factory: settings, database, broker producer, blueprints, JSON errors."""

from __future__ import annotations

import logging
import threading

from flask import Flask

from api import auth, errors, headers, text_guard
from api.body import ApiRequest
from api.context import Services, close_session
from api.feed_hub import FeedHub
from api.metrics import ClusterCollector, install_timing
from api.quotas import install_rate_limit
from api.routes import (
    checkpoints,
    docs,
    health,
    jobs,
    logs,
    metrics,
    models,
    plots,
    reports,
    results,
    stream,
    sweeps,
    tokens,
    ui,
)
from api.serving import ServingLine
from api.token_cache import TokenCache
from shared.config import Settings, get_settings
from shared.db import make_engine, make_session_factory
from shared.notify import JobEndSignal
from shared.queues import make_celery
from shared.revocations import Revocations


def create_app(settings: Settings | None = None) -> Flask:
    """Build the WSGI app; tests pass their own Settings, production reads TRAINYARD_*."""
    settings = settings or get_settings()
    app = Flask(__name__)
    app.request_class = ApiRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["TRAINYARD_CHECK_RESPONSES"] = settings.check_responses
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = make_engine(settings.resolved_database_url())
    sessions = make_session_factory(engine)
    revocations = Revocations(settings.resolved_broker_url())
    app.extensions["trainyard"] = Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        celery=make_celery(settings),
        job_ended=JobEndSignal(settings.resolved_broker_url()),
        predict_waiters=threading.BoundedSemaphore(settings.resolved_predict_max_waiting()),
        streams=threading.BoundedSemaphore(settings.resolved_stream_max_open()),
        feeds=FeedHub(sessions, settings.stream_poll_seconds),
        tokens=TokenCache(revocations, settings.token_cache_seconds),
        revocations=revocations,
        serving=ServingLine.for_broker(
            settings.resolved_broker_url(), enabled=settings.predict_serving
        ),
    )
    app.teardown_appcontext(close_session)
    services = app.extensions["trainyard"]
    app.extensions["trainyard.metrics"] = ClusterCollector(
        services.sessions, settings.resolved_broker_url()
    )

    errors.register(app)
    install_timing(app)
    text_guard.install(app)  # before the rate limit and auth read anything
    headers.install(app)
    limiter = install_rate_limit(app, settings)
    if limiter is not None:
        limiter.exempt(health.bp)  # load balancers and compose probe it all the time
        limiter.exempt(docs.bp)
        limiter.exempt(ui.bp)  # the dashboard's static files; its data calls are limited
        limiter.exempt(metrics.bp)  # Prometheus scrapes it on a timer
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(ui.bp)
    api_v1 = auth.protected_blueprint()
    for bp in (
        jobs.bp, results.bp, checkpoints.bp, models.bp, reports.bp, plots.bp, tokens.bp,
        sweeps.bp, stream.bp, logs.bp,
    ):  # fmt: skip
        api_v1.register_blueprint(bp)
    app.register_blueprint(api_v1)
    logging.getLogger(__name__).info("trainyard api on %s", settings.base_url())
    return app
