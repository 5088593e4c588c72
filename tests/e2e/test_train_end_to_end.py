"""HTTP -> Redis -> Celery worker process -> PostgreSQL -> HTTP, with the seed's classes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
import torch.nn.functional as F
from torch import nn

from shared.spec import JobSpec
from shared.tensors import bytes_to_state_dict
from tests.live import LiveService
from worker.training.data import make_datasets

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "cli" / "examples"


class Net(nn.Module):
    """The seed notes' Net, exactly as written there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _series(live: LiveService, job_id: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    body = live.get(f"/api/v1/jobs/{job_id}/metrics").json()
    return {(s["name"], s["split"]): s["points"] for s in body["series"]}


def test_lenet_on_digits_round_trip(live: LiveService) -> None:
    spec = {
        "model": {"preset": "lenet"},
        "data": {"dataset": "digits", "image_size": 32, "val_fraction": 0.2},
        "train": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "Adam", "lr": 0.003}},
        "hooks": {"every_n_steps": 5},
    }
    parsed = JobSpec.model_validate(spec)
    splits = make_datasets(
        parsed.data, seed=parsed.train.seed, loss=parsed.train.loss, data_dir=None
    )
    train, val = splits.train, splits.val
    assert val is not None
    job = live.post_job(spec)
    done = live.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]
    steps = done["summary"]["steps"]
    assert steps == -(-len(train) // 32) and done["progress"]["step"] == steps

    series = _series(live, job["id"])
    assert [p["step"] for p in series[("loss", "train")]] == list(range(1, steps + 1))
    val_loss = series[("loss", "val")][0]["value"]
    val_acc = series[("accuracy", "val")][0]["value"]
    assert series[("epoch_loss", "train")][0]["step"] == steps

    traces = live.get(f"/api/v1/jobs/{job['id']}/traces").json()["traces"]
    logged = sorted({t["step"] for t in traces})
    assert logged == [1, *range(5, steps + 1, 5)]
    at_5 = {(t["kind"], t["layer"]) for t in traces if t["step"] == 5}
    layers = {"conv1", "conv2", "fc1", "fc2", "fc3"}
    # Output gradients of every layer; input gradients of all but conv1 (its input is data).
    inputs = {f"{name}:input" for name in layers - {"conv1"}}
    assert {name for kind, name in at_5 if kind == "backward"} == layers | inputs
    assert {name for kind, name in at_5 if kind == "param_grad"} == {
        f"{layer}.{p}" for layer in layers for p in ("weight", "bias")
    }
    assert all(t["norm"] > 0 for t in traces)

    ckpts = live.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]
    assert [c["tag"] for c in ckpts] == ["epoch", "final"]
    resp = live.get(f"/api/v1/jobs/{job['id']}/checkpoints/final/state_dict")
    assert hashlib.sha256(resp.content).hexdigest() == ckpts[-1]["sha256"]

    # The downloaded weights drop into the seed's class and reproduce the service's numbers.
    net = Net()
    net.load_state_dict(bytes_to_state_dict(resp.content), strict=True)
    net.eval()
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.stack([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        logits = net(x)
    assert F.cross_entropy(logits, y).item() == pytest.approx(val_loss, rel=1e-4)
    assert (logits.argmax(1) == y).float().mean().item() == pytest.approx(val_acc, abs=1e-6)
    assert val_acc > 0.5  # one epoch of LeNet on digits learns something


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_readme_examples_succeed(live: LiveService, example: str) -> None:
    spec = json.loads((EXAMPLES / example).read_text())
    job = live.post_job(spec)
    done = live.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]
    series = _series(live, job["id"])
    assert len(series[("loss", "train")]) == done["summary"]["steps"]
    assert live.get(f"/api/v1/jobs/{job['id']}/traces", kind="param_grad").json()["traces"]
    ckpts = live.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]
    assert ckpts and ckpts[-1]["tag"] == "final"


def test_failures_end_as_failed_with_a_message(live: LiveService) -> None:
    diverging = {
        "model": {"preset": "my_model"},
        "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10]},
        "train": {"max_steps": 200, "loss": "MSELoss", "optimizer": {"name": "SGD", "lr": 10.0}},
    }
    job = live.wait(live.post_job(diverging)["id"])
    assert job["status"] == "failed"
    assert "first seen in" in job["error"] and "\n" not in job["error"]
    # The rows of the step where it went wrong are kept, with the bad values counted.
    step = int(job["error"].split(" at step ")[1].split()[0])
    bad = live.get(f"/api/v1/jobs/{job['id']}/traces", at_step=step).json()["traces"]
    assert any(t["nonfinite"] > 0 for t in bad)
    # The points logged before the failure are kept.
    assert _series(live, job["id"])[("loss", "train")]

    no_gpu = {
        "model": {"preset": "my_model"},
        "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10]},
        "train": {"max_steps": 5, "loss": "MSELoss", "device": "cuda"},
    }
    job = live.wait(live.post_job(no_gpu)["id"])
    if not torch.cuda.is_available():
        assert job["status"] == "failed" and "no CUDA device" in job["error"]
    events = live.get(f"/api/v1/jobs/{job['id']}/events").json()["events"]
    assert [e["kind"] for e in events][:2] == ["queued", "claimed"]


def test_cancel_running_job(live: LiveService) -> None:
    spec = {
        "model": {"preset": "tiny_model"},
        "data": {"dataset": "synthetic", "input_shape": [100], "size": 512},
        "train": {"epochs": 1000, "batch_size": 8},
        "hooks": {"every_n_steps": 100},
    }
    job = live.post_job(spec)
    live.wait(job["id"], until=("running",))
    resp = live.get(f"/api/v1/jobs/{job['id']}")
    assert resp.json()["status"] == "running"
    cancel = requests.post(
        f"{live.base_url}/api/v1/jobs/{job['id']}/cancel", headers=live.headers, timeout=10
    )
    assert cancel.status_code == 202
    done = live.wait(job["id"], timeout=60)
    assert done["status"] == "cancelled"
    assert 0 < done["summary"]["steps"] < 1000 * 52


def test_probe_kinds_and_alerts_through_the_service(live: LiveService) -> None:
    spec = {
        "model": {"preset": "my_model"},
        "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10], "size": 64},
        "train": {"max_steps": 6, "loss": "MSELoss", "batch_size": 8},
        "hooks": {
            "kinds": ["forward_pre", "forward", "backward", "param_grad", "weights"],
            "histogram_bins": 4,
            "alerts": {"exploding_above": 1e-9},
        },
    }
    job = live.wait(live.post_job(spec)["id"])
    assert job["status"] == "succeeded", job["error"]
    # Step 1 records every statistic; the logged steps up to full_every (10) norms only.
    between = live.get(f"/api/v1/jobs/{job['id']}/traces", at_step=3).json()["traces"]
    assert len(between) == 17 and all(t["norm"] is not None for t in between)
    assert all(t["update_ratio"] is None and t.get("histogram") is None for t in between)
    rows = live.get(f"/api/v1/jobs/{job['id']}/traces", at_step=1).json()["traces"]
    kinds = {t["kind"] for t in rows}
    assert kinds == {"forward_pre", "forward", "backward", "param_grad", "weights"}
    # 3 leaf modules x 2 forward kinds + 2 parameter owners' outputs and fc2's input
    # (backward) + 4 parameters x (param_grad, weights): 17 rows a step.
    assert len(rows) == 17
    assert all(t["update_ratio"] > 0 for t in rows if t["kind"] == "param_grad")
    assert all(len(t["histogram"]) == 4 for t in rows)
    events = live.get(f"/api/v1/jobs/{job['id']}/events").json()["events"]
    alerts = [e for e in events if e["kind"] == "exploding_gradient"]
    assert len(alerts) == 7 and alerts[0]["data"]["threshold"] == 1e-9
