"""POST /api/v1/sweeps refuses a sweep that cannot run, naming the field; owners see only
their own sweeps (in-process API on the real PostgreSQL; the controller is not running)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.specs import MLP_SGD

EXAMPLES = Path(__file__).resolve().parents[2] / "cli" / "examples"
BASE = MLP_SGD


def body(**changes: Any) -> dict[str, Any]:
    return {"spec": BASE, "space": {"train.optimizer.lr": {"log_uniform": [1e-4, 1.0]}},
            **changes}  # fmt: skip


def test_a_sweep_is_stored_running_with_its_defaults_filled_in(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    resp = client.post("/api/v1/sweeps", json=body(name="lr", max_trials=3), headers=alice)
    assert resp.status_code == 201, resp.json
    sweep = resp.json
    assert sweep["status"] == "running" and sweep["method"] == "tpe" and sweep["max_trials"] == 3
    assert sweep["trials"] == [] and sweep["best"] is None
    # The stored base spec spells out every default: paths into defaults exist.
    assert sweep["spec"]["spec"]["train"]["optimizer"]["momentum"] == 0.0
    assert resp.headers["Location"].endswith(f"/api/v1/sweeps/{sweep['id']}")
    listed = client.get("/api/v1/sweeps", headers=alice).json["sweeps"]
    assert [s["id"] for s in listed] == [sweep["id"]] and "trials" not in listed[0]


@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        ({"space": {"train.optimizer.nope": {"choice": [1]}}}, "space.train.optimizer.nope",
         "no 'nope'"),
        ({"space": {"model.layers[9].out_features": {"int": [8, 32]}}},
         "space.model.layers[9].out_features", "no 9"),
        ({"space": {"train.optimizer.lr": {"normal": [0, 1]}}}, "space.train.optimizer.lr",
         "a distribution is one of"),
        ({"space": {"train.optimizer.lr": {"uniform": [0.1, 0.1]}}},
         "space.train.optimizer.lr.uniform", "low < high"),
        ({"method": "grid"}, "", "grid search needs choice or int ranges"),
        ({"metric": "test/accuracy", "early_stop": "asha"}, "", "asha needs a metric"),
        ({"early_stop": "nothing"}, "early_stop", "unknown early_stop rule"),
        ({"early_stop": {"gradient": {"dead_above": 0.9}}}, "spec.hooks",
         "dead_above needs 'forward'"),
        ({"spec": {**BASE, "train": {"epochs": 0}}}, "spec.train.epochs", "greater than"),
        ({"max_trials": 0}, "max_trials", "greater than"),
        ({"metric": "train/accuracy"}, "", "a trial records train/"),
        ({"spec": {**BASE, "data": {"dataset": "digits", "val_fraction": 0.0}}}, "metric",
         "no validation split"),
        ({"method": "grid", "space": {"train.batch_size": {"int": [1, 2_000_000_000]}}}, "",
         "more than 10000"),
    ],
)  # fmt: skip
def test_a_sweep_that_cannot_run_is_refused_naming_the_field(
    client: FlaskClient, alice: dict[str, str], changes: dict[str, Any], loc: str, words: str
) -> None:
    resp = client.post("/api/v1/sweeps", json=body(**changes), headers=alice)
    assert resp.status_code in (400, 422), resp.json
    problem = resp.json
    text = problem["error"]["message"] + " " + str(problem["error"]["details"])
    assert words in text, problem
    assert loc in str(problem["error"]["details"]) or loc in problem["error"]["message"], problem
    assert client.get("/api/v1/sweeps", headers=alice).json["sweeps"] == []  # nothing stored


def test_a_grid_runs_each_point_once(client: FlaskClient, alice: dict[str, str]) -> None:
    space = {"train.optimizer.lr": {"choice": [0.1, 0.01]}, "train.batch_size": {"int": [8, 10]}}
    resp = client.post(
        "/api/v1/sweeps", json=body(space=space, method="grid", max_trials=50), headers=alice
    )
    assert resp.status_code == 201 and resp.json["max_trials"] == 6  # 2 x 3 points


def test_sweeps_are_their_owners_own(
    client: FlaskClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    sweep_id = client.post("/api/v1/sweeps", json=body(), headers=alice).json["id"]
    assert client.get(f"/api/v1/sweeps/{sweep_id}", headers=bob).status_code == 404
    assert client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=bob).status_code == 404
    assert client.get("/api/v1/sweeps", headers=bob).json["sweeps"] == []
    assert client.get("/api/v1/sweeps/not-a-uuid", headers=alice).status_code == 404
    cancelled = client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=alice)
    assert cancelled.status_code == 202 and cancelled.json["cancel_requested"] is True
    plot = client.get(f"/api/v1/sweeps/{sweep_id}/plots/history.png", headers=alice)
    assert plot.status_code == 404 and "no trial" in plot.json["error"]["message"]
    nope = client.get(f"/api/v1/sweeps/{sweep_id}/plots/pie.png", headers=alice)
    assert nope.status_code == 404 and "parallel" in nope.json["error"]["message"]


def test_the_shipped_sweep_example_is_accepted(client: FlaskClient, alice: dict[str, str]) -> None:
    example = json.loads((EXAMPLES / "sweeps" / "lr_digits.json").read_text())
    resp = client.post("/api/v1/sweeps", json=example, headers=alice)
    assert resp.status_code == 201, resp.json
    assert resp.json["max_trials"] == 8 and resp.json["method"] == "grid"
