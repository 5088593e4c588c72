"""Submitting and reading jobs over HTTP, on the real PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.models import Job, JobEvent
from tests.support.fixture_types import Submit
from tests.support.specs import LENET


def test_submit_stores_row_then_queues_message(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    redis_client: redis.Redis,
    submit: Submit,
) -> None:
    resp = submit(alice)
    assert resp.status_code == 202
    body = resp.get_json()
    assert resp.headers["Location"].endswith(f"/api/v1/jobs/{body['id']}")
    assert body["status"] == "queued" and body["owner"] == "alice" and body["queue"] == "train"
    with sessions() as session:
        job = session.get(Job, uuid.UUID(body["id"]))
        assert job is not None and job.enqueued_at is not None
        assert job.spec["model"]["preset"] == "lenet" and job.spec["model"]["freeze"] == []
        assert job.spec["train"]["optimizer"]["name"] == "SGD"  # defaults are stored explicitly
        kinds = session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job.id)).all()
        assert kinds == ["queued"]
    # The Redis message carries the job id and nothing else.
    raw = redis_client.lrange("train", 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["headers"]["task"] == "trainyard.train"
    assert body["id"] in message["headers"]["argsrepr"]


def test_device_routes_to_queue(
    client: FlaskClient, alice: dict[str, str], redis_client: redis.Redis, submit: Submit
) -> None:
    spec = {**LENET, "train": {"epochs": 1, "device": "cpu"}}
    assert submit(alice, spec).get_json()["queue"] == "train.cpu"
    assert redis_client.llen("train.cpu") == 1
    spec = {**LENET, "train": {"epochs": 1, "device": "cuda"}}
    assert submit(alice, spec).get_json()["queue"] == "train.gpu"


def test_malformed_spec_is_400_naming_the_field(
    client: FlaskClient,
    alice: dict[str, str],
    redis_client: redis.Redis,
    sessions: sessionmaker[Session],
    submit: Submit,
) -> None:
    bad = {**LENET, "train": {"epochs": 1, "batch_size": 0}}
    resp = submit(alice, bad)
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["code"] == "invalid_spec"
    assert "spec.train.batch_size" in err["message"]
    assert err["details"][0]["loc"] == "spec.train.batch_size"

    resp = submit(alice, {"model": {"preset": "lenet"}})
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"][0]["loc"] == "spec.data"

    layers = [{"type": "Linear", "name": "fc1", "in_featurez": 10, "out_features": 2}]
    resp = submit(
        alice,
        {"model": {"layers": layers}, "data": {"dataset": "synthetic", "num_classes": 2}},
    )
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert "fc1" in error["message"] and "in_featurez" in error["message"]
    assert error["details"][0]["loc"] == "spec.model.layers[0].in_featurez"

    # Shape mismatch caught by the dry run, before anything is stored or queued.
    layers = [{"type": "Linear", "in_features": 10, "out_features": 3}]
    resp = submit(
        alice,
        {"model": {"layers": layers}, "data": {"dataset": "synthetic", "num_classes": 2}},
    )
    assert resp.status_code == 400
    with sessions() as session:
        assert session.scalars(select(Job)).all() == []
    assert redis_client.llen("train") == 0


def test_bad_bodies(client: FlaskClient, alice: dict[str, str], submit: Submit) -> None:
    resp = client.post(
        "/api/v1/jobs", data="not json", headers=alice, content_type="application/json"
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "invalid_spec"
    resp = client.post(
        "/api/v1/jobs", json={"kind": "train", "spec": LENET, "prio": 1}, headers=alice
    )
    assert resp.status_code == 400 and "'prio'" in resp.get_json()["error"]["message"]
    deep = "[" * 100_000 + "]" * 100_000
    resp = client.post("/api/v1/jobs", data=deep, headers=alice, content_type="application/json")
    assert resp.status_code == 400
    resp = client.post("/api/v1/jobs", json={"kind": "bake", "spec": LENET}, headers=alice)
    assert resp.status_code == 400 and "kind" in resp.get_json()["error"]["message"]
    resp = client.post(
        "/api/v1/jobs", json={"kind": "train", "spec": LENET, "pad": "x" * 300_000}, headers=alice
    )
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "too_large"
    assert "TRAINYARD_MAX_REQUEST_BYTES" in resp.get_json()["error"]["message"]
    # 400M parameters: refused by the dry run's limit without allocating anything.
    big = [
        {"type": "Linear", "in_features": 4096, "out_features": 100_000},
        {"type": "Linear", "in_features": 100_000, "out_features": 10},
    ]
    resp = submit(
        alice,
        {"model": {"layers": big}, "data": {"dataset": "synthetic", "input_shape": [4096]}},
    )
    assert resp.status_code in (400, 413)
    assert "param" in resp.get_json()["error"]["message"]


def test_auth_required_and_owner_scoped(
    client: FlaskClient, alice: dict[str, str], bob: dict[str, str], submit: Submit
) -> None:
    assert client.get("/api/v1/jobs").status_code == 401
    resp = client.get("/api/v1/jobs", headers={"Authorization": "Bearer ty_nope"})
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"
    job_id = submit(alice).get_json()["id"]
    assert client.get(f"/api/v1/jobs/{job_id}", headers=alice).status_code == 200
    for path in (
        "",
        "/metrics",
        "/traces",
        "/checkpoints",
        "/events",
        "/checkpoints/final/state_dict",
    ):
        assert client.get(f"/api/v1/jobs/{job_id}{path}", headers=bob).status_code == 404
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert client.get("/api/v1/jobs", headers=bob).get_json()["jobs"] == []
    assert client.get("/api/v1/jobs/not-a-uuid", headers=alice).status_code == 404


def test_revoked_token_is_refused(client: FlaskClient, sessions: sessionmaker[Session]) -> None:
    from shared.db import session_scope
    from shared.revocations import Revocations
    from shared.tokens import create_token, get_token, revoke_token
    from tests.support.servers import REDIS_URL

    with session_scope(sessions) as session:
        plaintext, row = create_token(session=session, name="t", owner="carol")
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    with session_scope(sessions) as session:
        assert revoke_token(session=session, token=get_token(session=session, ref=str(row.id)),
                            by="test")  # fmt: skip
    # The API process still trusts its cached check until a revocation is announced, as
    # the API's and the CLI's revoke do after their commit.
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    Revocations(REDIS_URL).announce()
    assert client.get("/api/v1/jobs", headers=headers).status_code == 401


def test_list_newest_first_filters_and_cursor(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    ids = [submit(alice).get_json()["id"] for _ in range(5)]
    resp = client.get("/api/v1/jobs?limit=2", headers=alice).get_json()
    seen = [j["id"] for j in resp["jobs"]]
    while resp["next_cursor"]:
        resp = client.get(
            f"/api/v1/jobs?limit=2&cursor={resp['next_cursor']}", headers=alice
        ).get_json()
        seen += [j["id"] for j in resp["jobs"]]
    assert seen == list(reversed(ids))
    client.post(f"/api/v1/jobs/{ids[0]}/cancel", headers=alice)
    cancelled = client.get("/api/v1/jobs?status=cancelled", headers=alice).get_json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert client.get("/api/v1/jobs?status=bogus", headers=alice).status_code == 400
    assert client.get("/api/v1/jobs?limit=0", headers=alice).status_code == 400
    assert client.get("/api/v1/jobs?cursor=%%%", headers=alice).status_code == 400
    assert client.get("/api/v1/jobs?kind=infer", headers=alice).get_json()["jobs"] == []


def test_cancel_queued_then_conflict(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    resp = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
    assert resp.status_code == 202 and resp.get_json()["status"] == "cancelled"
    resp = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
    assert resp.status_code == 409
    events = client.get(f"/api/v1/jobs/{job_id}/events", headers=alice).get_json()["events"]
    assert [e["kind"] for e in events] == ["queued", "cancel_requested"]


def test_limits_refuse_before_anything_is_built(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    # A synthetic set too big for a worker's memory: 400 naming the data fields.
    huge = {"dataset": "synthetic", "input_shape": [1000, 1000], "size": 200_000}
    resp = submit(alice, {"model": {"preset": "my_model"}, "data": huge})
    assert resp.status_code == 400
    assert "size x input_shape" in resp.get_json()["error"]["message"]
    # Activations of a wide conv at a huge batch: 413 naming the batch size.
    layers = [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"type": "Flatten"},
        {"type": "Linear", "in_features": 64 * 32 * 32, "out_features": 10},
    ]
    spec = {
        "model": {"layers": layers},
        "data": {"dataset": "digits", "image_size": 32},
        "train": {"batch_size": 8192},
    }
    resp = submit(alice, spec)
    assert resp.status_code == 413
    error = resp.get_json()["error"]
    assert "batch_size 8192" in error["message"] and error["details"][0]["loc"] == (
        "spec.train.batch_size"
    )
    spec["train"] = {"batch_size": 64}
    assert submit(alice, spec).status_code == 202
    # A flag given as a string would silently mean True in torch.
    bad = [{"type": "Linear", "in_features": 10, "out_features": 10, "bias": "false"}]
    resp = submit(alice, {"model": {"layers": bad}, "data": {"dataset": "synthetic"}})
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"][0]["loc"] == "spec.model.layers[0].bias"


def test_query_parameters_are_strict(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    for path in (
        "/api/v1/jobs?limit=abc",
        "/api/v1/jobs?limit=1000000",
        f"/api/v1/jobs/{job_id}/traces?limit=0",
        f"/api/v1/jobs/{job_id}/traces?from_step=99999999999999999999999",
        f"/api/v1/jobs/{job_id}/metrics?to_step=-1",
        "/api/v1/jobs?cursor="
        + base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{uuid.uuid4()}".encode()).decode(),
    ):
        resp = client.get(path, headers=alice)
        assert resp.status_code == 400, path
        assert resp.get_json()["error"]["details"][0]["loc"] in (
            "limit",
            "from_step",
            "to_step",
            "cursor",
        )


def test_preempt_asks_a_running_job_to_checkpoint_and_requeue(
    client: FlaskClient,
    alice: dict[str, str],
    bob: dict[str, str],
    sessions: sessionmaker[Session],
    submit: Submit,
) -> None:
    job_id = submit(alice).get_json()["id"]
    resp = client.post(f"/api/v1/jobs/{job_id}/preempt", headers=alice)
    assert resp.status_code == 409  # queued: nothing to preempt yet
    with session_scope(sessions) as session:
        repository.claim_job(
            session=session, job_id=uuid.UUID(job_id), worker="w", lease_seconds=60,
            max_attempts=3,
        )  # fmt: skip
    assert client.post(f"/api/v1/jobs/{job_id}/preempt", headers=bob).status_code == 404
    resp = client.post(f"/api/v1/jobs/{job_id}/preempt", headers=alice)
    assert resp.status_code == 202 and resp.get_json()["preempt_requested"] is True
    with session_scope(sessions) as session:
        beat = repository.heartbeat(
            session=session, job_id=uuid.UUID(job_id), worker="w", lease_seconds=60,
            step=3, total=10, epoch=1,
        )  # fmt: skip
    assert beat.preempt is True and beat.cancel is False


def test_a_retried_submission_with_its_idempotency_key_gets_the_first_job(
    client: FlaskClient,
    alice: dict[str, str],
    bob: dict[str, str],
    sessions: sessionmaker[Session],
    redis_client: redis.Redis,
    submit: Submit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyed = {**alice, "Idempotency-Key": "order-42"}
    first = submit(keyed)
    again = submit(keyed)
    assert first.status_code == again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"]
    assert redis_client.llen("train") == 1  # one message too
    # The same key for another request is refused; another owner's keys are their own.
    other = submit(keyed, {**LENET, "train": {"epochs": 2}})
    assert other.status_code == 422
    assert other.get_json()["error"]["details"][0]["loc"] == "Idempotency-Key"
    assert submit({**bob, "Idempotency-Key": "order-42"}).status_code == 202
    bad = submit({**alice, "Idempotency-Key": "x" * 256})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_parameter"
    # Two requests racing past the lookup: the unique index lets one row in, and the
    # loser answers with the winner's job.
    monkeypatch.setattr("api.routes.jobs.replayed", lambda *args: None)
    raced = submit(keyed)
    assert raced.status_code == 202 and raced.get_json()["id"] == first.get_json()["id"]
    with sessions() as session:
        rows = session.scalars(select(Job).where(Job.owner == "alice")).all()
    assert len(rows) == 1 and redis_client.llen("train") == 2  # alice's and bob's jobs
