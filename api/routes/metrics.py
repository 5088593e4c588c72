"""GET /metrics for Prometheus, behind its own token (TRAINYARD_METRICS_TOKEN)."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from api.context import services
from api.contract import answers, contract
from api.metrics import ClusterCollector, exposition
from shared.contract.queries import NoQuery
from shared.errors import NotFound, Unauthorized

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@contract.validate(
    query=NoQuery,
    resp=answers("HTTP_200", "HTTP_404"),  # Prometheus text (api.routes.docs says so)
    tags=["health"],
    operation_id="getMetrics",
)
def metrics() -> Response:
    """Prometheus metrics of the API and the cluster; the bearer token is
    TRAINYARD_METRICS_TOKEN, not an API token (404 while that is unset)."""
    svc = services()
    expected = svc.settings.metrics_token
    if not expected:
        raise NotFound("metrics are off: set TRAINYARD_METRICS_TOKEN to turn them on")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("GET /metrics needs 'Authorization: Bearer <TRAINYARD_METRICS_TOKEN>'")
    collector: ClusterCollector = current_app.extensions["trainyard.metrics"]
    body, content_type = exposition(collector)
    return Response(body, content_type=content_type)
