"""Liveness and readiness probes (no token: load balancers and compose healthchecks call them)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from spectree import Response as Answers
from sqlalchemy import text

from api.context import services
from api.contract import contract
from shared.config import Settings
from shared.contract.responses import Health, Readiness
from shared.disk import disk_room

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@contract.validate(resp=Answers(HTTP_200=Health), tags=["health"], security={})
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@contract.validate(
    resp=Answers(HTTP_200=Readiness, HTTP_503=Readiness), tags=["health"], security={}
)
def readyz() -> tuple[Response, int]:
    """The database and the broker answer and the disk under TRAINYARD_HOME has room;
    503 names whichever does not."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with svc.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    checks["disk"] = _disk_check(svc.settings)
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), (
        200 if ready else 503
    )


def _disk_check(settings: Settings) -> str:
    # The probe needs no token: it names the setting, not the path.
    try:
        room = disk_room(settings.home)
    except OSError as exc:
        return f"unreadable: {type(exc).__name__} under TRAINYARD_HOME"
    if room.free_mb >= settings.min_free_disk_mb:
        return "ok"
    state = "full" if room.full else "nearly full"
    return (
        f"{state}: {room.free_mb:,.0f} MB free under TRAINYARD_HOME "
        f"(TRAINYARD_MIN_FREE_DISK_MB={settings.min_free_disk_mb})"
    )
