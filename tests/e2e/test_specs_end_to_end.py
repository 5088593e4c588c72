"""The richer specs through the real service: a small ResNet with augmentation and loader
workers, and fine-tuning one job's weights in another with a frozen body."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from shared.tensors import bytes_to_state_dict
from tests.live import LiveService
from tests.support.specs import MLP, RESNETISH

pytestmark = pytest.mark.e2e


def _series(live: LiveService, job_id: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    body = live.get(f"/api/v1/jobs/{job_id}/metrics").json()
    return {(s["name"], s["split"]): s["points"] for s in body["series"]}


def test_resnet_with_augmentation_schedule_and_early_stopping(live: LiveService) -> None:
    spec = {
        "model": {
            "layers": RESNETISH,
            "init": [
                {"params": "stem.weight", "scheme": "kaiming_normal"},
                {"params": "block*.0.weight", "scheme": "kaiming_normal"},
                {"params": "fc.bias", "scheme": "zeros"},
            ],
        },
        "data": {
            "dataset": "digits",
            "image_size": 8,
            "val_fraction": 0.2,
            "test_fraction": 0.1,
            "transforms": [
                {"type": "RandomCrop", "size": 8, "padding": 1},
                {"type": "Normalize", "mean": [0.3], "std": [0.4]},
            ],
        },
        "train": {
            "epochs": 3,
            "batch_size": 64,
            "optimizer": {"name": "AdamW", "lr": 0.003, "weight_decay": 0.01},
            "scheduler": {"name": "OneCycleLR", "max_lr": 0.01},
            "early_stopping": {"monitor": "val_accuracy", "mode": "max", "patience": 5},
            "grad_clip": {"max_norm": 5.0},
            "num_workers": 2,
        },
        "hooks": {"every_n_steps": 10},
    }
    job = live.post_job(spec)
    done = live.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]
    series = _series(live, job["id"])
    assert len(series[("lr", "train")]) == done["summary"]["steps"]  # OneCycle: every step
    assert ("accuracy", "test") in series and ("accuracy", "val") in series
    tags = [
        c["tag"] for c in live.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]
    ]
    assert "best" in tags and tags[-1] == "final"
    layers = {
        t["layer"]
        for t in live.get(f"/api/v1/jobs/{job['id']}/traces", kind="backward").json()["traces"]
    }
    assert {"block2.shortcut.0", "block1.body.0", "fc"} <= layers


def test_fine_tune_with_frozen_body_and_new_head(live: LiveService) -> None:
    base = {
        "model": {"layers": MLP},
        "data": {"dataset": "digits"},
        "train": {"epochs": 2, "optimizer": {"name": "Adam", "lr": 0.01}},
    }
    first = live.wait(live.post_job(base)["id"])
    assert first["status"] == "succeeded", first["error"]
    head5 = [*MLP[:3], {"type": "Linear", "name": "head", "in_features": 32, "out_features": 5}]
    fine = {
        "model": {"layers": head5, "freeze": ["fc1.*"],
                  "init_from": {"job_id": first["id"], "skip": ["head.*"]}},
        "data": {"dataset": "synthetic", "input_shape": [1, 8, 8], "num_classes": 5},
        "train": {"epochs": 2, "optimizer": {"name": "Adam", "lr": 0.01}},
    }  # fmt: skip
    second = live.wait(live.post_job(fine)["id"])
    assert second["status"] == "succeeded", second["error"]
    assert second["summary"]["frozen_count"] == 64 * 32 + 32
    assert second["summary"]["trainable_count"] == 32 * 5 + 5

    def weights(job_id: str) -> dict[str, torch.Tensor]:
        resp = live.get(f"/api/v1/jobs/{job_id}/checkpoints/final/state_dict")
        return bytes_to_state_dict(resp.content)

    before, after = weights(first["id"]), weights(second["id"])
    assert torch.equal(before["fc1.weight"], after["fc1.weight"])  # loaded and frozen
    assert after["head.weight"].shape == (5, 32)
