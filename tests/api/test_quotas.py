"""Priorities on submission, the per-owner queued quota and the per-token rate limit
(flask-limiter counting in the real Redis): 429 with Retry-After, naming what was hit."""

from __future__ import annotations

import uuid

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from shared.config import Settings
from tests.support.fixture_types import Submit
from tests.support.servers import make_token
from tests.support.specs import TINY


def test_a_job_has_priority_5_unless_it_asks_for_another(
    alice: dict[str, str], submit: Submit
) -> None:
    assert submit(alice, TINY).get_json()["priority"] == 5
    assert submit(alice, TINY, priority=9).get_json()["priority"] == 9


@pytest.mark.parametrize("bad", [10, -1, "5", True, 2.5, None])
def test_a_priority_outside_0_to_9_is_refused_naming_it(
    alice: dict[str, str], submit: Submit, bad: object
) -> None:
    resp = submit(alice, TINY, priority=bad)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["details"][0]["loc"] == "priority" and "0 (runs last) to 9" in error["message"]


def test_an_owner_over_the_queued_quota_gets_429_naming_it(
    settings: Settings,
    clean_db: None,
    sessions: sessionmaker[Session],
    redis_client: object,
) -> None:
    client = create_app(settings.model_copy(update={"quota_max_queued": 2})).test_client()
    alice = {"Authorization": f"Bearer {make_token(sessions, 'alice')}"}
    bob = {"Authorization": f"Bearer {make_token(sessions, 'bob')}"}
    body = {"kind": "train", "spec": TINY}
    for _ in range(2):
        assert client.post("/api/v1/jobs", json=body, headers=alice).status_code == 202
    refused = client.post("/api/v1/jobs", json=body, headers=alice)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded" and error["details"] == [
        {"loc": "quota", "msg": "max_queued"}
    ]
    assert "TRAINYARD_QUOTA_MAX_QUEUED" in error["message"]
    assert "2 training jobs" in error["message"]
    assert client.post("/api/v1/jobs", json=body, headers=bob).status_code == 202  # per owner
    jobs = client.get("/api/v1/jobs", headers=alice).get_json()["jobs"]
    client.post(f"/api/v1/jobs/{jobs[0]['id']}/cancel", headers=alice)
    assert client.post("/api/v1/jobs", json=body, headers=alice).status_code == 202


def test_a_token_over_the_rate_limit_gets_429_and_when_to_retry(
    settings: Settings,
    clean_db: None,
    sessions: sessionmaker[Session],
    redis_client: object,
) -> None:
    limited = settings.model_copy(update={"rate_limit": "3 per minute"})
    client: FlaskClient = create_app(limited).test_client()
    alice = {"Authorization": f"Bearer {make_token(sessions, 'alice')}"}
    bob = {"Authorization": f"Bearer {make_token(sessions, 'bob')}"}
    for _ in range(3):
        assert client.get("/api/v1/jobs", headers=alice).status_code == 200
    refused = client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=alice)  # any route counts
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    error = refused.get_json()["error"]
    assert error["code"] == "rate_limited" and "3 per 1 minute" in error["message"]
    assert "TRAINYARD_RATE_LIMIT" in error["message"]
    assert client.get("/api/v1/jobs", headers=bob).status_code == 200  # per token
    assert client.get("/readyz").status_code == 200  # probes are never limited
    keys = redis_client.keys("*trainyard-rate*")  # type: ignore[attr-defined]
    assert keys and all(b"list_jobs" not in key for key in keys)  # in Redis, for all routes
