"""Liveness and readiness against the real servers, and against a dead broker."""

from __future__ import annotations

from flask.testing import FlaskClient

from api import create_app
from shared.config import Settings


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["checks"] == {"database": "ok", "broker": "ok", "disk": "ok"}


def test_readyz_503_when_the_disk_under_home_is_nearly_full(settings: Settings) -> None:
    # More room asked for than any disk has: the real free space is measured and found short.
    greedy = settings.model_copy(update={"min_free_disk_mb": 2**40})
    resp = create_app(greedy).test_client().get("/readyz")
    assert resp.status_code == 503
    disk = resp.get_json()["checks"]["disk"]
    assert disk.startswith("nearly full: ") and "under TRAINYARD_HOME" in disk
    assert str(settings.home) not in disk  # an unauthenticated probe shows no paths
    assert "TRAINYARD_MIN_FREE_DISK_MB" in disk


def test_readyz_503_when_broker_down(settings: Settings) -> None:
    dead = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    resp = create_app(dead).test_client().get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_requests_get_503_with_retry_after_while_the_database_is_down(
    settings: Settings,
) -> None:
    dead = settings.model_copy(update={"database_url": "postgresql+psycopg://x@127.0.0.1:1/x"})
    client = create_app(dead).test_client()
    headers = {"Authorization": "Bearer some-token"}
    for resp in (
        client.get("/api/v1/jobs", headers=headers),
        client.post("/api/v1/jobs", json={"kind": "train", "spec": {}}, headers=headers),
    ):
        assert resp.status_code == 503, resp.get_json()
        assert resp.headers["Retry-After"] == "5"
        error = resp.get_json()["error"]
        assert error["code"] == "database_unavailable" and "127.0.0.1" not in error["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"] != "ok"
