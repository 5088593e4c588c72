"""Train over HTTP, then predict over HTTP: the answer comes from a real Celery worker of
the `infer` queue (its serving line) and equals the seed's own inference with the
downloaded weights."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from torch import nn

from shared.net.build import build_model
from shared.spec import JobSpec
from shared.tensors import bytes_to_state_dict
from tests.live import LiveService

pytestmark = pytest.mark.e2e

SPEC = {
    "model": {"preset": "lenet"},
    "data": {"dataset": "digits", "image_size": 32, "val_fraction": 0.2},
    "train": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "Adam", "lr": 0.003}},
    "hooks": {"every_n_steps": 50},
}


def _png(image: torch.Tensor) -> str:
    pixels = (image[0] * 255).round().to(torch.uint8).numpy()
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _recorded(live: LiveService, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """A served prediction's record, once the worker has written it (a batch per 200 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = requests.get(
            f"{live.base_url}/api/v1/jobs/{job_id}", headers=live.headers, timeout=30
        )
        if resp.status_code == 200:
            body: dict[str, Any] = resp.json()
            return body
        assert resp.status_code == 404, resp.text
        time.sleep(0.1)
    raise AssertionError(f"the record of prediction {job_id} was not written in {timeout} s")


def test_predict_over_http_equals_the_seeds_inference(live: LiveService) -> None:
    job = live.wait(live.post_job(SPEC)["id"])
    assert job["status"] == "succeeded", job["error"]
    weights = live.get(f"/api/v1/jobs/{job['id']}/checkpoints/final/state_dict").content
    model = build_model(JobSpec.model_validate(SPEC).model)
    model.load_state_dict(bytes_to_state_dict(weights))
    model.eval()

    torch.manual_seed(1)
    x = torch.rand(4, 1, 32, 32)
    url = f"{live.base_url}/api/v1/models/{job['id']}/predict"
    resp = requests.post(url, json={"inputs": x.tolist()}, headers=live.headers, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    with torch.no_grad():
        logits = model(x)
    probabilities = nn.Softmax(dim=1)(logits)  # the seed's "Predicted class" recipe
    assert [o["predicted_class"] for o in body["outputs"]] == probabilities.argmax(1).tolist()
    got = torch.tensor([o["probabilities"] for o in body["outputs"]])
    torch.testing.assert_close(got, probabilities, rtol=1e-4, atol=1e-5)
    # Answered on the serving line (the worker's thread, not a job row), recorded after.
    assert body["batch_samples"] == 4
    recorded = _recorded(live, body["job_id"])
    assert recorded["status"] == "succeeded" and recorded["summary"]["outputs"] == body["outputs"]

    # The same images as PNGs (8-bit, so rounded): same classes, and the model is warm.
    images = (x * 255).round() / 255
    resp = requests.post(
        url, json={"inputs": [_png(i) for i in images]}, headers=live.headers, timeout=60
    )
    assert resp.status_code == 200, resp.text
    with torch.no_grad():
        expected = model(images).argmax(1).tolist()
    assert [o["predicted_class"] for o in resp.json()["outputs"]] == expected
    assert resp.json()["cached_model"] is True

    # The same through POST /jobs: an infer job to poll, listed with the caller's jobs.
    infer = requests.post(
        f"{live.base_url}/api/v1/jobs",
        json={"kind": "infer", "model_job_id": job["id"], "inputs": x[:1].tolist()},
        headers=live.headers,
        timeout=30,
    ).json()
    done = live.wait(infer["id"])
    assert done["status"] == "succeeded" and done["queue"] == "infer"
    first = done["summary"]["outputs"][0]  # a batch of one: equal up to float rounding
    assert first["predicted_class"] == body["outputs"][0]["predicted_class"]
    torch.testing.assert_close(torch.tensor(first["logits"]), logits[0], rtol=1e-4, atol=1e-5)
    listed = live.get("/api/v1/jobs", kind="infer").json()["jobs"]
    assert [j["id"] for j in listed] == [infer["id"], *[j["id"] for j in listed[1:]]]
