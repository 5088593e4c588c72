"""GET /jobs/<id>/summary, GET /compare and thinned metrics, on jobs trained for real."""

from __future__ import annotations

import math
import uuid
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Metric
from shared.net.build import build_model
from shared.spec import JobSpec
from worker.tasks import execute_train


def _spec(lr: float) -> dict[str, Any]:
    return {
        "model": {
            "layers": [
                {"type": "Flatten"},
                {"type": "Linear", "name": "fc1", "in_features": 64, "out_features": 16},
                {"type": "ReLU"},
                {"type": "Linear", "name": "fc2", "in_features": 16, "out_features": 10},
            ],
            "freeze": ["fc1.bias"],
        },
        "data": {"dataset": "digits", "val_fraction": 0.2},
        "train": {"epochs": 2, "batch_size": 128, "optimizer": {"name": "Adam", "lr": lr}},
    }


def _trained(sessions: sessionmaker[Session], settings: Settings, lr: float) -> uuid.UUID:
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session, owner="alice", kind="train", spec=_spec(lr), queue="train"
        )
    assert execute_train(job.id, worker="w", sessions=sessions, settings=settings) == "succeeded"
    return job.id


def _values(
    sessions: sessionmaker[Session], job_id: uuid.UUID, split: str, name: str
) -> list[float]:
    with sessions() as session:
        query = (
            select(Metric.value)
            .where(Metric.job_id == job_id, Metric.split == split, Metric.name == name)
            .order_by(Metric.step)
        )
        return list(session.scalars(query))


def test_summary_has_metrics_timing_and_the_model(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    job_id = _trained(sessions, settings, 0.01)
    resp = client.get(f"/api/v1/jobs/{job_id}/summary", headers=alice)
    assert resp.status_code == 200
    body = resp.get_json()
    val_loss = _values(sessions, job_id, "val", "loss")
    val_acc = _values(sessions, job_id, "val", "accuracy")
    assert len(val_loss) == 2
    metrics = body["metrics"]
    assert metrics["final"]["val_loss"] == val_loss[-1]
    assert metrics["final"]["val_accuracy"] == val_acc[-1]
    assert metrics["best"]["val_loss"]["value"] == min(val_loss)
    assert metrics["best"]["val_accuracy"]["value"] == max(val_acc)
    assert metrics["final"]["train_loss"] == _values(sessions, job_id, "train", "loss")[-1]
    job = body["job"]
    assert body["wall_s"] == job["summary"]["wall_s"] and body["steps"] == job["summary"]["steps"]
    assert body["steps_per_s"] > 0
    model = build_model(JobSpec.model_validate(_spec(0.01)).model)
    assert body["model"]["module_tree"] == str(model)  # what print(model) shows
    table = [(p["name"], p["shape"], p["trainable"]) for p in body["model"]["parameters"]]
    assert table == [(n, list(p.shape), p.requires_grad) for n, p in model.named_parameters()]
    assert ("fc1.bias", [16], False) in table
    assert body["model"]["frozen_count"] == 16
    assert body["model"]["param_count"] == sum(p.numel() for p in model.parameters())


def test_compare_shows_spec_differences_and_metrics(
    client: FlaskClient,
    alice: dict[str, str],
    bob: dict[str, str],
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    a, b = _trained(sessions, settings, 0.01), _trained(sessions, settings, 0.001)
    resp = client.get(f"/api/v1/compare?ids={a},{b}", headers=alice)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["spec_differences"] == [{"path": "train.optimizer.lr", "values": [0.01, 0.001]}]
    assert [j["id"] for j in body["jobs"]] == [str(a), str(b)]
    for row, job_id in zip(body["jobs"], (a, b), strict=True):
        assert row["final"]["val_accuracy"] == _values(sessions, job_id, "val", "accuracy")[-1]
        assert row["best"]["val_loss"] == min(_values(sessions, job_id, "val", "loss"))

    for query, status, loc in (
        (f"ids={a}", 400, "ids"),
        (f"ids={a},nope", 400, "ids"),
        (f"ids={a},{uuid.uuid4()}", 404, "ids"),
    ):
        resp = client.get(f"/api/v1/compare?{query}", headers=alice)
        assert resp.status_code == status and resp.get_json()["error"]["details"][0]["loc"] == loc
    assert client.get(f"/api/v1/compare?ids={a},{b}", headers=bob).status_code == 404


def test_metrics_max_points_keeps_spikes(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session, owner="alice", kind="train", spec={}, queue="train"
        )
        values = {s: 1.0 / s for s in range(1, 1001)}
        values[537] = 50.0  # one spike
        values[700] = math.nan
        repository.record_metrics(
            session=session,
            job_id=job.id,
            rows=[
                {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": v}
                for s, v in values.items()
            ],
        )
    resp = client.get(f"/api/v1/jobs/{job.id}/metrics?max_points=20", headers=alice)
    points = resp.get_json()["series"][0]["points"]
    assert 20 <= len(points) <= 61
    steps = [p["step"] for p in points]
    assert steps == sorted(steps) and steps[0] == 1
    assert {"step": 537, "epoch": 1, "value": 50.0} in points
    assert {"step": 700, "epoch": 1, "value": "NaN"} in points
    full = client.get(f"/api/v1/jobs/{job.id}/metrics", headers=alice).get_json()
    assert len(full["series"][0]["points"]) == 1000
    bad = client.get(f"/api/v1/jobs/{job.id}/metrics?max_points=0", headers=alice)
    assert bad.status_code == 400


def test_summary_of_a_job_whose_spec_no_longer_builds_still_shows_its_metrics(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    with session_scope(sessions) as session:  # as an older version might have stored it
        job = repository.create_job(
            session=session, owner="alice", kind="train",
            spec={"model": {"preset": "retired"}}, queue="train",
        )  # fmt: skip
        repository.record_metrics(
            session=session,
            job_id=job.id,
            rows=[{"split": "val", "name": "accuracy", "step": 3, "epoch": 1, "value": 0.5}],
        )
    resp = client.get(f"/api/v1/jobs/{job.id}/summary", headers=alice)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["model"] is None and body["metrics"]["final"]["val_accuracy"] == 0.5
