"""Every error leaves as JSON: {"error": {"code", "message", "details"}}; never an HTML page."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from flask import Flask, Response, jsonify
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.errors import QuotaExceeded, TrainyardError

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5  # what a 503 asks a client to wait before trying again


def problem(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> tuple[Response, int]:
    """A JSON error response."""
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return jsonify(body), status


def _keep_headers(response: Response, exc: HTTPException) -> Response:
    """What the exception says besides its HTML body: `Allow` on a 405, for one."""
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def register(app: Flask) -> None:
    """Install handlers for domain errors, HTTP errors and anything unexpected."""

    @app.errorhandler(TrainyardError)
    def _domain(exc: TrainyardError) -> tuple[Response, int]:
        response, status = problem(exc.status, exc.code, exc.message, exc.details)
        if isinstance(exc, QuotaExceeded):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> tuple[Response, int]:
        limit = app.config["MAX_CONTENT_LENGTH"]
        message = f"request body over {limit:,} bytes (TRAINYARD_MAX_REQUEST_BYTES)"
        return problem(413, "too_large", message)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = problem(exc.code or 500, code, exc.description or exc.name)
        return _keep_headers(response, exc), status

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(DisconnectionError)
    @app.errorhandler(sqlalchemy.exc.TimeoutError)
    def _database_unavailable(exc: Exception) -> tuple[Response, int]:
        # The database is down, restarting or out of connections: nothing the client did.
        # The driver's text (hosts, SQL) stays in the log.
        log.warning("database unavailable: %s", exc)
        if "disk is full" in str(exc):  # SQLite's SQLITE_FULL
            message = "the server's disk is full; nothing was stored"
            response, status = problem(507, "insufficient_storage", message)
        else:
            message = "the database is unavailable right now; retry in a few seconds"
            response, status = problem(503, "database_unavailable", message)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response, status

    @app.errorhandler(sqlalchemy.exc.DataError)
    def _bad_data(exc: sqlalchemy.exc.DataError) -> tuple[Response, int]:
        # A value the database refused (the text guard should have caught it first): the
        # client's, not the server's; the driver's text stays in the log.
        log.warning("database refused a value: %s", exc)
        return problem(400, "invalid_value", "a value in the request cannot be stored")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # The traceback stays in the server log; clients get no internals.
        log.exception("unhandled error")
        return problem(500, "internal_error", "internal server error")
