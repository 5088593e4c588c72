"""Inference over HTTP on the real PostgreSQL and Redis: submit-time checks and predict.

The answering side is the worker's own task body, fed by the message the API put in
Redis (tests/e2e runs it under a real Celery worker).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
import torch
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.infer_inputs import InputLimits
from shared.models import Job
from shared.net.build import build_model
from shared.notify import JobEndSignal
from shared.serving import PredictCall, alive_key, requests_key
from shared.spec import JobSpec
from shared.tensors import state_dict_to_bytes
from tests.support.servers import REDIS_URL, make_token
from tests.support.trained import DIGITS_LINEAR, built_model, trained_job
from worker.inference import ModelCache
from worker.prediction_log import PredictionRecorder
from worker.serving import PredictionServer
from worker.tasks import execute_infer, load_inference_model

SPEC = DIGITS_LINEAR


def _trained_job(sessions: sessionmaker[Session], owner: str = "alice") -> uuid.UUID:
    return trained_job(sessions, owner)


@pytest.fixture()
def infer_worker(
    redis_client: redis.Redis, sessions: sessionmaker[Session], settings: Settings
) -> Iterator[ModelCache]:
    """Runs the infer task body for every message the API sends to the 'infer' queue."""
    stop = threading.Event()
    cache = ModelCache(2**24)

    def loop() -> None:
        while not stop.is_set():
            item = redis_client.brpop(["infer"], timeout=0.2)
            if item is None:
                continue
            message = json.loads(item[1])
            assert message["headers"]["task"] == "trainyard.infer"
            job_id = uuid.UUID(json.loads(base64.b64decode(message["body"]))[0][0])
            execute_infer(
                job_id, worker="t", sessions=sessions, settings=settings, cache=cache,
                ended=JobEndSignal(REDIS_URL),
            )  # fmt: skip

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield cache
    stop.set()
    thread.join(5)


def _digit_png(value: int) -> str:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_an_infer_job_goes_to_the_infer_queue_with_its_checkpoint_pinned(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    redis_client: redis.Redis,
) -> None:
    model_job = _trained_job(sessions)
    body = {"kind": "infer", "model_job_id": str(model_job), "inputs": [[[0.5] * 8] * 8]}
    resp = client.post("/api/v1/jobs", json=body, headers=alice)
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["kind"] == "infer" and job["queue"] == "infer" and job["status"] == "queued"
    with sessions() as session:
        ckpt = repository.get_checkpoint(session=session, job_id=model_job, ref="final")
        row = session.get(Job, uuid.UUID(job["id"]))
        assert row is not None and row.source_job_id == model_job
    assert job["spec"]["checkpoint"] == "final" and job["spec"]["checkpoint_id"] == str(ckpt.id)
    assert redis_client.llen("infer") == 1 and redis_client.llen("train") == 0


def _post(client: FlaskClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/api/v1/jobs", json={"kind": "infer", **body}, headers=headers)


def test_bad_inference_requests_name_the_field(
    client: FlaskClient,
    alice: dict[str, str],
    bob: dict[str, str],
    sessions: sessionmaker[Session],
    redis_client: redis.Redis,
) -> None:
    model_job = str(_trained_job(sessions))
    sample = [[[0.5] * 8] * 8]
    cases: list[tuple[dict[str, str], dict[str, Any], int, str, str]] = [
        (alice, {"model_job_id": model_job, "inputs": [[0.5] * 8]}, 400, "inputs",
         "inputs: shape [1, 8] does not fit the model: expected one sample of shape [1, 8, 8]"),
        (alice, {"model_job_id": model_job}, 400, "inputs", "inputs: Field required"),
        (alice, {"model_job_id": "nope", "inputs": sample}, 400, "model_job_id", "UUID"),
        (alice, {"model_job_id": model_job, "inputs": sample, "checkpoint": "bestest"}, 400,
         "checkpoint", "must be one of ['final', 'best', 'latest', 'epoch'] or a checkpoint id"),
        (alice, {"model_job_id": model_job, "inputs": sample, "checkpoint": "best"}, 404,
         "checkpoint", f"job {model_job} has no 'best' checkpoint"),
        (alice, {"model_job_id": str(uuid.uuid4()), "inputs": sample}, 404, "", "not found"),
        (bob, {"model_job_id": model_job, "inputs": sample}, 404, "", "not found"),
        (alice, {"model_job_id": model_job, "inputs": sample, "spec": {}}, 400, "spec",
         "unknown field 'spec'"),
        (alice, {"model_job_id": model_job, "inputs": [sample] * 300}, 413, "inputs",
         "300 samples; at most 256"),
        (alice, {"model_job_id": model_job, "inputs": ["AAAA"]}, 400, "inputs[0]",
         "not a PNG or JPEG image"),
    ]  # fmt: skip
    for headers, body, status, loc, message in cases:
        resp = _post(client, headers, **body)
        err = resp.get_json()["error"]
        assert resp.status_code == status, (body, err)
        assert message in err["message"], (body, err)
        if loc:
            assert err["details"][0]["loc"] == loc, (body, err)
    assert redis_client.llen("infer") == 0  # nothing was queued


def test_an_inference_job_cannot_be_the_model(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    model_job = str(_trained_job(sessions))
    first = _post(client, alice, model_job_id=model_job, inputs=[[[0.0] * 8] * 8]).get_json()
    resp = _post(client, alice, model_job_id=first["id"], inputs=[[[0.0] * 8] * 8])
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"][0]["loc"] == "model_job_id"


def test_predict_answers_with_the_predictions(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    infer_worker: ModelCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    woke: list[bool] = []
    wait = JobEndSignal.wait

    def spy(self: JobEndSignal, job_id: uuid.UUID, timeout: float) -> bool:
        woke.append(wait(self, job_id, timeout))
        return woke[-1]

    monkeypatch.setattr(JobEndSignal, "wait", spy)
    model_job = _trained_job(sessions)
    images = [_digit_png(0), _digit_png(255)]
    resp = client.post(
        f"/api/v1/models/{model_job}/predict", json={"inputs": images}, headers=alice
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["samples"] == 2 and body["task"] == "classification"
    model = build_model(JobSpec.model_validate(SPEC).model)
    torch.manual_seed(0)
    model = build_model(JobSpec.model_validate(SPEC).model).eval()
    with torch.no_grad():
        logits = model(torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]))
    assert [o["predicted_class"] for o in body["outputs"]] == logits.argmax(1).tolist()
    torch.testing.assert_close(torch.tensor([o["logits"] for o in body["outputs"]]), logits)
    job = client.get(resp.headers["Location"], headers=alice).get_json()
    assert job["status"] == "succeeded" and job["summary"]["outputs"] == body["outputs"]
    again = client.post(
        f"/api/v1/models/{model_job}/predict", json={"inputs": images[:1]}, headers=alice
    ).get_json()
    assert again["cached_model"] is True and infer_worker.hits == 1
    assert woke and woke[-1] is True  # the worker's announcement woke the API, no polling


def test_predict_past_its_wait_answers_202_with_the_job(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    model_job = _trained_job(sessions)  # no worker runs: the job stays queued
    resp = client.post(
        f"/api/v1/models/{model_job}/predict",
        json={"inputs": [[[0.5] * 8] * 8], "wait_seconds": 0.05},
        headers=alice,
    )
    assert resp.status_code == 202
    assert resp.get_json()["status"] == "queued" and "/api/v1/jobs/" in resp.headers["Location"]


def test_predict_refuses_bad_bodies(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    model_job = _trained_job(sessions)
    url = f"/api/v1/models/{model_job}/predict"
    for body, loc in (
        ({"inputs": [[[0.5] * 8] * 8], "wait_seconds": -1}, "wait_seconds"),
        ({"inputs": [[[0.5] * 8] * 8], "model_job_id": str(model_job)}, "model_job_id"),
        ([1, 2], "body"),
    ):
        resp = client.post(url, json=body, headers=alice)
        assert resp.status_code == 400 and resp.get_json()["error"]["details"][0]["loc"] == loc
    deep = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser goes
    resp = client.post(url, data=deep, headers=alice)
    assert resp.status_code == 400 and resp.get_json()["error"]["details"][0]["loc"] == "body"
    resp = client.post(
        f"/api/v1/models/{uuid.uuid4()}/predict", json={"inputs": [1]}, headers=alice
    )
    assert resp.status_code == 404


@pytest.mark.parametrize("answering", ["infer_worker", "serving_worker"])
def test_a_failed_prediction_is_422_with_the_reason_and_recorded_failed(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    answering: str,
    request: pytest.FixtureRequest,
) -> None:
    """On the job path (the infer task) and on the serving line alike."""
    worker = request.getfixturevalue(answering)
    model_job = _trained_job(sessions)
    with session_scope(sessions) as session:  # weights that no longer fit the model
        ckpt = repository.get_checkpoint(session=session, job_id=model_job, ref="final")
        ckpt.model_state = state_dict_to_bytes({"fc.weight": torch.zeros(3, 3)})
    resp = client.post(
        f"/api/v1/models/{model_job}/predict", json={"inputs": [[[0.5] * 8] * 8]}, headers=alice
    )
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "inference_failed" and "failed: RuntimeError" in err["message"]
    if isinstance(worker, PredictionServer):
        assert worker.recorder.flush(timeout=30)
    (job,) = _infer_jobs(sessions)
    assert job.status == "failed" and job.error is not None and "RuntimeError" in job.error


def test_past_the_waiting_limit_predict_answers_202_at_once(
    app: Flask, settings: Settings, sessions: sessionmaker[Session], infer_worker: ModelCache
) -> None:
    # A process that may hold no waiting request: every predict hands back its job to
    # poll, although a worker is there to answer within the wait.
    busy = create_app(Settings(**{**settings.model_dump(), "predict_max_waiting": 0}))
    headers = {"Authorization": f"Bearer {make_token(sessions, 'alice')}"}
    model_job = _trained_job(sessions)
    resp = busy.test_client().post(
        f"/api/v1/models/{model_job}/predict",
        json={"inputs": [[[0.5] * 8] * 8], "wait_seconds": 30},
        headers=headers,
    )
    assert resp.status_code == 202 and resp.get_json()["kind"] == "infer"


def test_a_model_whose_stored_spec_no_longer_validates_is_refused_naming_it(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    model_job = _trained_job(sessions)
    with session_scope(sessions) as session:  # as an older version might have stored it
        job = session.get(Job, model_job)
        assert job is not None
        job.spec = {**SPEC, "model": {"preset": "retired"}}
    resp = client.post(
        f"/api/v1/models/{model_job}/predict", json={"inputs": [[[0.5] * 8] * 8]}, headers=alice
    )
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["details"][0]["loc"] == "model_job_id"
    assert f"job {model_job}'s spec no longer validates" in error["message"]


def test_a_retried_prediction_with_its_idempotency_key_is_the_same_job(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    infer_worker: ModelCache,
) -> None:
    model_job = _trained_job(sessions)
    body = {"inputs": [_digit_png(0)]}
    keyed = {**alice, "Idempotency-Key": "predict-1"}
    url = f"/api/v1/models/{model_job}/predict"
    first, again = (
        client.post(url, json=body, headers=keyed),
        client.post(url, json=body, headers=keyed),
    )
    assert first.status_code == again.status_code == 200, again.get_json()
    assert again.get_json() == first.get_json()  # the first answer, from the first job
    with sessions() as session:
        infer_jobs = session.scalars(select(Job).where(Job.kind == "infer")).all()
    assert len(infer_jobs) == 1


@pytest.fixture()
def serving_worker(
    redis_client: redis.Redis, sessions: sessionmaker[Session]
) -> Iterator[PredictionServer]:
    """The serving line's worker side as an inference worker runs it; its records are
    written only when a test flushes them, so a test sees what was stored when."""
    recorder = PredictionRecorder(sessions, flush_seconds=3600, outage_seconds=5).start()
    server = PredictionServer(
        redis_client, queue="infer", worker="w1", cache=ModelCache(2**24),
        load=lambda spec: load_inference_model(sessions, spec), recorder=recorder,
        limits=InputLimits(), max_batch=32, batch_wait_seconds=0.002,
    ).start()  # fmt: skip
    deadline = time.monotonic() + 30
    while not redis_client.exists(alive_key("infer")):  # the line opens on its first loop
        assert time.monotonic() < deadline, "the serving thread never set its alive key"
        time.sleep(0.01)
    yield server
    server.stop()
    recorder.close(timeout=30)


def _infer_jobs(sessions: sessionmaker[Session]) -> list[Job]:
    with sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == "infer")))


def test_predict_on_the_serving_line_writes_nothing_before_the_answer(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    serving_worker: PredictionServer,
) -> None:
    model_job = _trained_job(sessions)
    images = [_digit_png(0), _digit_png(255)]
    url = f"/api/v1/models/{model_job}/predict"
    resp = client.post(url, json={"inputs": images}, headers=alice)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    with torch.no_grad():
        logits = built_model()(torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]))
    torch.testing.assert_close(torch.tensor([o["logits"] for o in body["outputs"]]), logits)
    assert body["cached_model"] is False and body["batch_samples"] == 2
    assert _infer_jobs(sessions) == []  # answered before any row was written
    assert client.get(resp.headers["Location"], headers=alice).status_code == 404
    assert serving_worker.recorder.flush(timeout=30)
    job = client.get(resp.headers["Location"], headers=alice).get_json()
    assert job["status"] == "succeeded" and job["id"] == body["job_id"]
    assert job["summary"] == {k: v for k, v in body.items() if k != "job_id"}
    assert job["spec"]["checkpoint_id"] == body["checkpoint_id"]
    events = client.get(f"{resp.headers['Location']}/events", headers=alice).get_json()
    assert [e["kind"] for e in events["events"]] == ["served"]
    again = client.post(url, json={"inputs": images[:1]}, headers=alice).get_json()
    assert again["cached_model"] is True and serving_worker.stats.requests == 2


def test_an_open_line_nobody_answers_in_time_gives_202_with_the_job_to_poll(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    redis_client: redis.Redis,
) -> None:
    model_job = _trained_job(sessions)
    redis_client.set(alive_key("infer"), "gone", px=60_000)  # a worker that stopped taking
    resp = client.post(
        f"/api/v1/models/{model_job}/predict",
        json={"inputs": [[[0.5] * 8] * 8], "wait_seconds": 0.05},
        headers=alice,
    )
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["status"] == "queued" and job["kind"] == "infer"
    assert resp.headers["Location"].endswith(job["id"])
    (waiting,) = redis_client.lrange(requests_key("infer"), 0, -1)  # still there to serve
    assert PredictCall.decode(waiting).id == uuid.UUID(job["id"])
    assert _infer_jobs(sessions) == []


def test_an_idempotency_key_or_a_closed_line_takes_the_job_path(
    app: Flask,
    client: FlaskClient,
    alice: dict[str, str],
    settings: Settings,
    sessions: sessionmaker[Session],
    infer_worker: ModelCache,
    serving_worker: PredictionServer,
) -> None:
    model_job = _trained_job(sessions)
    url = f"/api/v1/models/{model_job}/predict"
    keyed = {**alice, "Idempotency-Key": "predict-2"}
    assert client.post(url, json={"inputs": [_digit_png(0)]}, headers=keyed).status_code == 200
    off = create_app(Settings(**{**settings.model_dump(), "predict_serving": False}))
    resp = off.test_client().post(url, json={"inputs": [_digit_png(0)]}, headers=alice)
    assert resp.status_code == 200
    assert len(_infer_jobs(sessions)) == 2 and serving_worker.stats.requests == 0
