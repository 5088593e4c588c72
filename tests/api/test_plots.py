"""PNG plots of a job over HTTP: real rows in PostgreSQL, images decoded and inspected."""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from api.charts import PLOTS
from shared import repository
from shared.db import session_scope
from shared.models import Job
from tests.support.fixture_types import Submit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VIRIDIS_LOW, VIRIDIS_HIGH, RED = (68, 1, 84), (253, 231, 37), (255, 0, 0)


def _trace(step: int, layer: str, kind: str, norm: float, zero_frac: float = 0.0) -> dict[str, Any]:
    return {
        "step": step, "layer": layer, "kind": kind, "numel": 4, "norm": norm, "mean": 0.0,
        "std": 1.0, "min": -1.0, "max": 1.0, "zero_frac": zero_frac, "nonfinite": 0,
    }  # fmt: skip


def _metric(split: str, name: str, step: int, value: float) -> dict[str, Any]:
    return {"split": split, "name": name, "step": step, "epoch": 1 + step // 20, "value": value}


def _new_job(
    submit: Submit,
    headers: dict[str, str],
    sessions: sessionmaker[Session],
    *,
    metrics: Sequence[dict[str, Any]] = (),
    traces: Sequence[dict[str, Any]] = (),
) -> str:
    job_id: str = submit(headers).get_json()["id"]
    with session_scope(sessions) as session:
        repository.record_metrics(session=session, job_id=uuid.UUID(job_id), rows=metrics)
        repository.record_traces(session=session, job_id=uuid.UUID(job_id), rows=traces)
    return job_id


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _pixel_rows(png: bytes, rgb: tuple[int, int, int]) -> np.ndarray:
    """y of every pixel of colour `rgb` in the left 70% (the heatmap; the colorbar is right)."""
    pixels = _image(png)
    left = pixels[:, : pixels.shape[1] * 7 // 10]
    near = (np.abs(left - np.array(rgb)) <= 30).all(axis=2)
    return np.nonzero(near)[0]


def _full_job_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    metrics = [_metric("train", "loss", s, 2.0 / s) for s in range(1, 61)]
    for s in (20, 40, 60):
        metrics += [
            _metric("train", "epoch_loss", s, 2.0 / s),
            _metric("val", "loss", s, 2.5 / s),
            _metric("val", "accuracy", s, s / 70),
        ]
    metrics += [_metric("test", "accuracy", 60, 0.8), _metric("train", "lr", 1, 0.1)]
    metrics.append(_metric("train", "lr", 30, 0.01))
    traces = [
        _trace(s, layer, kind, 10.0 ** -(i + 1), zero_frac=0.1 * i)
        for s in range(5, 61, 5)
        for i, layer in enumerate(("conv1", "relu1", "fc1"))
        for kind in ("backward", "forward")
    ]
    traces += [_trace(s, "fc1.weight", "param_grad", 0.5) for s in range(5, 61, 5)]
    return metrics, traces


def test_every_plot_is_a_900x500_png(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    metrics, traces = _full_job_rows()
    job_id = _new_job(submit, alice, sessions, metrics=metrics, traces=traces)
    for name in ("loss", "accuracy", "lr", "grad_flow", "zero_frac"):
        resp = client.get(f"/api/v1/jobs/{job_id}/plots/{name}.png", headers=alice)
        assert resp.status_code == 200, (name, resp.get_json())
        assert resp.mimetype == "image/png"
        assert resp.data.startswith(PNG_SIGNATURE)
        assert Image.open(io.BytesIO(resp.data)).size == (900, 500)
        assert resp.headers["Cache-Control"] == "private, no-cache"
        assert resp.headers["ETag"].startswith('"')


def test_grad_flow_colours_each_layer_by_its_norm_in_model_order(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    def job(weight: float, bias: float, extra: Sequence[dict[str, Any]] = ()) -> bytes:
        rows = [
            _trace(s, layer, "param_grad", norm)
            for s in range(5, 101, 5)
            for layer, norm in (("conv1.weight", weight), ("conv1.bias", bias))
        ]
        job_id = _new_job(submit, alice, sessions, traces=rows + list(extra))
        resp = client.get(f"/api/v1/jobs/{job_id}/plots/grad_flow.png", headers=alice)
        assert resp.status_code == 200
        return resp.data

    tiny_weight = job(weight=1e-8, bias=1e2)
    tiny_bias = job(weight=1e2, bias=1e-8)
    assert tiny_weight != tiny_bias
    for png, top, bottom in ((tiny_weight, VIRIDIS_LOW, VIRIDIS_HIGH),
                             (tiny_bias, VIRIDIS_HIGH, VIRIDIS_LOW)):  # fmt: skip
        top_rows, bottom_rows = _pixel_rows(png, top), _pixel_rows(png, bottom)
        assert len(top_rows) > 10_000 and len(bottom_rows) > 10_000  # whole heatmap bands
        # The database returns "conv1.bias" first (by name); the model's order puts
        # "conv1.weight" on top: the row with the weight's colour is the upper one.
        assert np.median(top_rows) < np.median(bottom_rows)

    # A NaN norm is drawn in its own colour, not dropped and not on the colour scale.
    nan_rows = [_trace(s, "fc1.weight", "param_grad", math.nan) for s in range(5, 101, 5)]
    with_nan = job(weight=1e-8, bias=1e2, extra=nan_rows)
    assert len(_pixel_rows(with_nan, RED)) > len(_pixel_rows(tiny_weight, RED)) + 5_000


def test_etag_304_and_a_new_image_when_the_job_moves_on(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    rows = [_metric("train", "loss", s, 1.0 / s) for s in range(1, 21)]
    job_id = _new_job(submit, alice, sessions, metrics=rows)
    url = f"/api/v1/jobs/{job_id}/plots/loss.png"
    first = client.get(url, headers=alice)
    etag = first.headers["ETag"]
    again = client.get(url, headers={**alice, "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag

    # New rows without a new job state: the cached image of this state is served.
    more = [_metric("train", "loss", s, 5.0) for s in range(21, 41)]
    with session_scope(sessions) as session:
        repository.record_metrics(session=session, job_id=uuid.UUID(job_id), rows=more)
    cached = client.get(url, headers=alice)
    assert cached.headers["ETag"] == etag and cached.data == first.data

    with session_scope(sessions) as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        job.progress_step = 40
    moved = client.get(url, headers={**alice, "If-None-Match": etag})
    assert moved.status_code == 200 and moved.headers["ETag"] != etag
    assert moved.data != first.data  # re-rendered with the new points


def test_unknown_plot_other_owner_and_no_data(
    client: FlaskClient,
    alice: dict[str, str],
    bob: dict[str, str],
    sessions: sessionmaker[Session],
    submit: Submit,
) -> None:
    job_id = _new_job(submit, alice, sessions)
    unknown = client.get(f"/api/v1/jobs/{job_id}/plots/histogram.png", headers=alice)
    assert unknown.status_code == 404
    message = unknown.get_json()["error"]["message"]
    assert all(name in message for name in PLOTS) and "histogram" in message

    assert client.get(f"/api/v1/jobs/{job_id}/plots/loss.png", headers=bob).status_code == 404
    assert client.get(f"/api/v1/jobs/{uuid.uuid4()}/plots/loss.png", headers=alice).status_code == (
        404
    )

    grads = client.get(f"/api/v1/jobs/{job_id}/plots/grad_flow.png", headers=alice)
    assert grads.status_code == 404
    error = grads.get_json()["error"]
    assert error["code"] == "no_data"
    assert job_id in error["message"] and "hooks.kinds" in error["message"]
    assert "'backward'" in error["message"] and "'param_grad'" in error["message"]
    dead = client.get(f"/api/v1/jobs/{job_id}/plots/zero_frac.png", headers=alice).get_json()
    assert dead["error"]["code"] == "no_data" and "'forward'" in dead["error"]["message"]
    loss = client.get(f"/api/v1/jobs/{job_id}/plots/loss.png", headers=alice).get_json()
    assert loss["error"]["code"] == "no_data" and "train/loss" in loss["error"]["message"]


def test_a_job_whose_spec_no_longer_builds_is_still_plotted(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    rows = [_trace(s, "fc1.weight", "param_grad", 0.5) for s in range(5, 61, 5)]
    job_id = _new_job(submit, alice, sessions, traces=rows)
    with session_scope(sessions) as session:  # as an older version might have stored it
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        job.spec = {"model": {"preset": "retired"}}
    resp = client.get(f"/api/v1/jobs/{job_id}/plots/grad_flow.png", headers=alice)
    assert resp.status_code == 200 and resp.data.startswith(PNG_SIGNATURE)
