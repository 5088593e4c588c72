"""Tokens with a lifecycle: scopes, expiry, revocation by an admin, an audit log; and
owners deleting their own jobs."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import auth, create_app
from cli.main import main
from shared.config import Settings, get_settings
from shared.db import session_scope
from shared.models import AuditEvent, Job
from shared.tokens import create_token
from tests.support.fixture_types import Submit


def _token(sessions: sessionmaker[Session], owner: str, **options: object) -> dict[str, str]:
    with session_scope(sessions) as session:
        plaintext, _ = create_token(session=session, name=owner, owner=owner, **options)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {plaintext}"}


def _audit(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_an_expired_token_is_a_401_that_says_so_and_is_audited(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    expired = _token(sessions, "erin", expires_in=timedelta(seconds=-1))
    resp = client.get("/api/v1/jobs", headers=expired)
    assert resp.status_code == 401 and "expired" in resp.get_json()["error"]["message"]
    failed = _audit(sessions, "auth_failed")
    assert failed and failed[-1].target == "/api/v1/jobs" and "expired" in failed[-1].detail
    secret = expired["Authorization"].split()[1]
    assert all(secret not in (row.token_prefix or "") + row.detail for row in failed)


def test_a_read_only_token_reads_but_cannot_submit(
    client: FlaskClient, sessions: sessionmaker[Session], submit: Submit
) -> None:
    reader = _token(sessions, "rita", scopes=("read",))
    assert client.get("/api/v1/jobs", headers=reader).status_code == 200
    resp = submit(reader)
    assert resp.status_code == 403 and "needs scope 'submit'" in resp.get_json()["error"]["message"]


def test_admins_list_and_revoke_tokens_and_others_may_not(
    client: FlaskClient, sessions: sessionmaker[Session], alice: dict[str, str]
) -> None:
    admin = _token(sessions, "root", is_admin=True)
    assert client.get("/api/v1/tokens", headers=alice).status_code == 403
    listed = client.get("/api/v1/tokens", headers=admin).get_json()["tokens"]
    alices = [t for t in listed if t["owner"] == "alice"]
    assert alices and all("hash" not in key for t in listed for key in t)
    assert client.get("/api/v1/jobs", headers=alice).status_code == 200
    resp = client.delete(f"/api/v1/tokens/{alices[0]['id']}", headers=admin)
    assert resp.status_code == 200 and resp.get_json()["state"] == "revoked"
    assert client.get("/api/v1/jobs", headers=alice).status_code == 401  # at once
    assert client.delete("/api/v1/tokens/999999", headers=admin).status_code == 404
    assert [e.detail for e in _audit(sessions, "token_revoked")] == ["by root (" + admin[
        "Authorization"].split()[1][:10] + ")"]  # fmt: skip


def test_an_owner_deletes_a_job_with_everything_it_recorded(
    client: FlaskClient,
    sessions: sessionmaker[Session],
    alice: dict[str, str],
    bob: dict[str, str],
    submit: Submit,
) -> None:
    job_id = submit(alice).get_json()["id"]
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=alice).status_code == 204
    assert client.get(f"/api/v1/jobs/{job_id}", headers=alice).status_code == 404
    with sessions() as session:
        assert session.get(Job, uuid.UUID(job_id)) is None
    deleted = _audit(sessions, "job_deleted")
    assert [(e.owner, e.target) for e in deleted] == [("alice", f"job {job_id}")]


def test_a_flood_of_made_up_tokens_writes_a_bounded_number_of_audit_rows(
    client: FlaskClient, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import auth

    budget = auth.FailureBudget(5, clock=lambda: 600.0)  # one minute, a fresh budget
    monkeypatch.setattr(auth, "_FAILURES", budget)
    for i in range(12):
        resp = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer made-up-{i}"})
        assert resp.status_code == 401
    rows = _audit(sessions, "auth_failed")
    assert len(rows) == 5
    assert "further failures from 127.0.0.1 this minute are not logged" in rows[-1].detail


def test_a_read_only_token_may_check_a_spec_but_not_submit_it(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    reader = _token(sessions, "rob", scopes=("read",))
    spec = {"model": {"preset": "lenet"}, "data": {"dataset": "digits", "image_size": 32}}
    assert (
        client.post("/api/v1/models/summary", json={"spec": spec}, headers=reader).status_code
        == 200
    )
    resp = client.post("/api/v1/jobs", json={"kind": "train", "spec": spec}, headers=reader)
    assert resp.status_code == 403


def test_huge_token_ids_and_revoked_rotations_are_clear_errors(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    import pytest as _pytest

    from shared.errors import SpecError
    from shared.tokens import get_token, revoke_token, rotate_token

    admin = _token(sessions, "root2", is_admin=True)
    assert client.delete("/api/v1/tokens/99999999999999999999", headers=admin).status_code == 404
    with session_scope(sessions) as session:
        _, row = create_token(session=session, name="old", owner="olga")
        revoke_token(session=session, token=row, by="test")
        with _pytest.raises(SpecError, match="is revoked"):
            rotate_token(session=session, token=get_token(session=session, ref=str(row.id)),
                         by="test")  # fmt: skip


def test_a_token_revoked_anywhere_is_refused_at_once_by_every_api_process(
    app: Flask,
    settings: Settings,
    sessions: sessionmaker[Session],
    alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two API processes on the same Redis and database, each with its token cache.
    first, second = app.test_client(), create_app(settings).test_client()
    looked_up: list[str] = []
    real = auth.check_token

    def counting(**kwargs: Any) -> Any:
        looked_up.append(kwargs["plaintext"])
        return real(**kwargs)

    monkeypatch.setattr(auth, "check_token", counting)
    for client in (first, second, first, second, first):
        assert client.get("/api/v1/jobs", headers=alice).status_code == 200
    assert len(looked_up) == 2  # once per process; then from its cache
    admin = _token(sessions, "root", is_admin=True)
    alices = [
        t
        for t in first.get("/api/v1/tokens", headers=admin).get_json()["tokens"]
        if t["owner"] == "alice"
    ]
    assert first.delete(f"/api/v1/tokens/{alices[0]['id']}", headers=admin).status_code == 200
    assert second.get("/api/v1/jobs", headers=alice).status_code == 401  # the other process
    # Revoked from the CLI (another process again): refused at once too.
    bob = _token(sessions, "bob")
    assert second.get("/api/v1/jobs", headers=bob).status_code == 200
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("TRAINYARD_BROKER_URL", settings.broker_url or "")
    get_settings.cache_clear()
    prefix = bob["Authorization"].split()[1][:10]
    result = CliRunner().invoke(main, ["token", "revoke", prefix])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert second.get("/api/v1/jobs", headers=bob).status_code == 401


def test_without_redis_every_request_looks_its_token_up(
    settings: Settings, sessions: sessionmaker[Session], clean_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    alone = create_app(settings.model_copy(update={"broker_url": "filesystem://"}))
    headers = _token(sessions, "frank")
    looked_up: list[str] = []
    real = auth.check_token
    monkeypatch.setattr(auth, "check_token", lambda **kw: looked_up.append("x") or real(**kw))
    client = alone.test_client()
    for _ in range(3):
        assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    assert len(looked_up) == 3
