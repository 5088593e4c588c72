"""Sweeps over HTTP: the controller (a Celery worker on the `sweeps` queue), trial jobs on
the training worker, Optuna's study in PostgreSQL's `optuna` schema."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.live import LiveService

# The seed's NeuralNetwork on digits (28x28, as its 784 inputs want): 23 steps an epoch.
BASE = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "SGD", "lr": 0.1}, "seed": 0},
    "hooks": {"every_n_steps": 1},
}
STEPS_PER_EPOCH = 23
LRS = [1e-4, 3e-4, 1e-3, 1e-2, 0.1, 0.3, 3.0, 10.0]


def create_sweep(live: LiveService, body: dict[str, Any]) -> dict[str, Any]:
    resp = requests.post(
        f"{live.base_url}/api/v1/sweeps", json=body, headers=live.headers, timeout=60
    )
    assert resp.status_code == 201, resp.text
    sweep: dict[str, Any] = resp.json()
    return sweep


def wait_sweep(live: LiveService, sweep_id: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep: dict[str, Any] = live.get(f"/api/v1/sweeps/{sweep_id}").json()
        if sweep["status"] != "running":
            return sweep
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} still running after {timeout} s: {sweep}")


def test_gradient_rule_prunes_the_exploding_learning_rates(live: LiveService) -> None:
    sweep = create_sweep(
        live,
        {
            "name": "lr-range",
            "spec": BASE,
            "space": {"train.optimizer.lr": {"choice": LRS}},
            "method": "grid",
            "metric": "val/accuracy",
            "goal": "maximize",
            "max_trials": 8,
            "parallel": 4,
            "early_stop": "gradient",
        },
    )
    assert sweep["status"] == "running" and sweep["max_trials"] == 8
    done = wait_sweep(live, sweep["id"])
    assert done["status"] == "succeeded", done
    trials = {t["params"]["train.optimizer.lr"]: t for t in done["trials"]}
    assert sorted(trials) == sorted(LRS)  # the grid, each point once
    exploded = trials[10.0]
    assert exploded["state"] == "pruned", exploded
    assert "'linear_relu_stack." in exploded["stop_reason"], exploded  # names the layer
    job = live.get(f"/api/v1/jobs/{exploded['job_id']}").json()
    assert job["status"] == "pruned" and job["progress"]["step"] < STEPS_PER_EPOCH, job
    assert job["sweep_id"] == sweep["id"] and job["error"] == exploded["stop_reason"]
    kinds = [e["kind"] for e in live.get(f"/api/v1/jobs/{exploded['job_id']}/events").json()
             ["events"]]  # fmt: skip
    assert "exploding_gradient" in kinds and kinds[-1] == "pruned", kinds
    for lr in (1e-4, 1e-3, 1e-2):  # small steps train to the end
        assert trials[lr]["state"] == "complete", trials[lr]
    best = done["best"]
    assert best["state"] == "complete" and best["number"] in {t["number"] for t in trials.values()}
    assert best["value"] == max(t["value"] for t in trials.values() if t["state"] == "complete")
    # The best trial is an ordinary job: its checkpoint predicts.
    answer = requests.post(
        f"{live.base_url}/api/v1/models/{best['job_id']}/predict",
        json={"inputs": [[[0.0] * 28] * 28]},
        headers=live.headers,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert 0 <= output["predicted_class"] < 10 and len(output["probabilities"]) == 10
    for name in ("parallel", "history"):
        png = live.get(f"/api/v1/sweeps/{sweep['id']}/plots/{name}.png")
        assert png.content.startswith(b"\x89PNG")


def _asha_body() -> dict[str, Any]:
    return {
        "spec": {**BASE, "train": {**BASE["train"], "epochs": 3}},
        "space": {"train.optimizer.lr": {"log_uniform": [1e-4, 0.5]}},
        "method": "random",
        "seed": 7,
        "metric": "val/accuracy",
        "goal": "maximize",
        "max_trials": 9,
        "parallel": 1,
        "early_stop": {"asha": {"reduction_factor": 3, "min_epochs": 1}},
    }


def _decisions(live: LiveService, sweep: dict[str, Any]) -> list[tuple[float, str, int]]:
    """(lr, state, epochs trained) of each trial, in trial order."""
    out = []
    for trial in sorted(sweep["trials"], key=lambda t: t["number"]):
        job = live.get(f"/api/v1/jobs/{trial['job_id']}").json()
        out.append(
            (trial["params"]["train.optimizer.lr"], trial["state"], job["progress"]["epoch"])
        )
    return out


def test_asha_prunes_at_the_first_rung_and_decides_the_same_twice(live: LiveService) -> None:
    first = wait_sweep(live, create_sweep(live, _asha_body())["id"])
    again = wait_sweep(live, create_sweep(live, _asha_body())["id"])
    decided = _decisions(live, first)
    assert decided == _decisions(live, again)  # one worker, one seed: the same sweep
    assert len(decided) == 9
    pruned = [d for d in decided if d[1] == "pruned"]
    assert pruned and all(epochs == 1 for _, _, epochs in pruned), decided  # the first rung
    # The weakest trial at the first rung (after the first, which has no rivals) stops there.
    rung = {}
    for trial in first["trials"]:
        points = live.get(
            f"/api/v1/jobs/{trial['job_id']}/metrics", name="accuracy", split="val"
        ).json()["series"][0]["points"]
        rung[trial["number"]] = points[0]["value"]
    weakest = min((n for n in rung if n > 0), key=lambda n: rung[n])
    state = {t["number"]: t for t in first["trials"]}[weakest]
    assert state["state"] == "pruned" and "ASHA" in state["stop_reason"], state


def test_cancel_stops_the_running_trials_and_starts_no_more(live: LiveService) -> None:
    body = {
        "spec": {**BASE, "train": {**BASE["train"], "epochs": 50}},
        "space": {"train.optimizer.lr": {"log_uniform": [1e-3, 0.1]}},
        "method": "random",
        "max_trials": 6,
        "parallel": 2,
    }
    sweep = create_sweep(live, body)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        shown = live.get(f"/api/v1/sweeps/{sweep['id']}").json()
        jobs = [live.get(f"/api/v1/jobs/{t['job_id']}").json() for t in shown["trials"]]
        if any(j["status"] == "running" for j in jobs):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("no trial started running")
    resp = requests.post(
        f"{live.base_url}/api/v1/sweeps/{sweep['id']}/cancel", headers=live.headers, timeout=30
    )
    assert resp.status_code == 202, resp.text
    done = wait_sweep(live, sweep["id"], timeout=60)
    assert done["status"] == "cancelled"
    assert len(done["trials"]) == 2  # nothing started after the cancel
    for trial in done["trials"]:
        assert trial["state"] == "cancelled"
        job = live.wait(trial["job_id"], timeout=60)
        assert job["status"] == "cancelled", job
    time.sleep(1.0)  # a late pass must not start trials either
    assert len(live.get(f"/api/v1/sweeps/{sweep['id']}").json()["trials"]) == 2
    again = requests.post(
        f"{live.base_url}/api/v1/sweeps/{sweep['id']}/cancel", headers=live.headers, timeout=30
    )
    assert again.status_code == 409
