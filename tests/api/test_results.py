"""Metrics, traces and checkpoints written through the repository, read over HTTP."""

from __future__ import annotations

import hashlib
import math
import uuid

import torch
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.tensors import bytes_to_state_dict, sha256_hex, state_dict_to_bytes
from tests.support.fixture_types import Submit


def _trace(step: int, layer: str, kind: str, norm: float) -> dict[str, object]:
    return {
        "step": step,
        "layer": layer,
        "kind": kind,
        "numel": 4,
        "norm": norm,
        "mean": 0.0,
        "std": 1.0,
        "min": -1.0,
        "max": 1.0,
        "zero_frac": 0.25,
        "nonfinite": 0,
    }


def test_metrics_grouped_and_nan_spelled(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    rows = [
        {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": 1.0 / s}
        for s in range(1, 4)
    ]
    rows.append({"split": "val", "name": "loss", "step": 3, "epoch": 1, "value": math.nan})
    with session_scope(sessions) as session:
        repository.record_metrics(session=session, job_id=uuid.UUID(job_id), rows=rows)
        # A retried write of the same points is a no-op, not an error or a duplicate.
        repository.record_metrics(session=session, job_id=uuid.UUID(job_id), rows=rows)
    body = client.get(f"/api/v1/jobs/{job_id}/metrics", headers=alice).get_json()
    series = {(s["name"], s["split"]): s["points"] for s in body["series"]}
    assert [p["step"] for p in series[("loss", "train")]] == [1, 2, 3]
    assert series[("loss", "train")][1] == {"step": 2, "epoch": 1, "value": 0.5}
    assert series[("loss", "val")] == [{"step": 3, "epoch": 1, "value": "NaN"}]
    only_val = client.get(f"/api/v1/jobs/{job_id}/metrics?split=val", headers=alice).get_json()
    assert [s["split"] for s in only_val["series"]] == ["val"]


def test_traces_filters(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    rows = [
        _trace(s, layer, kind, float(s))
        for s in range(1, 6)
        for layer in ("conv1", "fc1")
        for kind in ("backward", "param_grad")
    ]
    with session_scope(sessions) as session:
        repository.record_traces(session=session, job_id=uuid.UUID(job_id), rows=rows)
    url = f"/api/v1/jobs/{job_id}/traces"
    assert len(client.get(url, headers=alice).get_json()["traces"]) == 20
    got = client.get(
        f"{url}?layer=fc1&kind=backward&from_step=2&to_step=4", headers=alice
    ).get_json()["traces"]
    assert [(t["step"], t["layer"], t["kind"]) for t in got] == [
        (2, "fc1", "backward"),
        (3, "fc1", "backward"),
        (4, "fc1", "backward"),
    ]
    assert got[0]["norm"] == 2.0 and got[0]["zero_frac"] == 0.25
    assert client.get(f"{url}?kind=sideways", headers=alice).status_code == 400
    assert client.get(f"{url}?from_step=abc", headers=alice).status_code == 400
    page = client.get(f"{url}?limit=3", headers=alice).get_json()
    assert len(page["traces"]) == 3 and page["truncated"] is True


def test_checkpoint_download_is_safetensors(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    state = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}
    blob = state_dict_to_bytes(state)
    with session_scope(sessions) as session:
        for step, tag in ((10, "epoch"), (20, "final")):
            repository.save_checkpoint(
                session=session,
                job_id=uuid.UUID(job_id),
                step=step,
                epoch=step // 10,
                tag=tag,
                model_state=blob,
                optimizer_state=None,
                sha256=sha256_hex(blob),
            )
    listing = client.get(f"/api/v1/jobs/{job_id}/checkpoints", headers=alice).get_json()
    assert [(c["step"], c["tag"]) for c in listing["checkpoints"]] == [(10, "epoch"), (20, "final")]
    resp = client.get(listing["checkpoints"][0]["links"]["state_dict"], headers=alice)
    assert resp.status_code == 200 and resp.mimetype == "application/octet-stream"
    assert hashlib.sha256(resp.data).hexdigest() == resp.headers["X-Checkpoint-Sha256"]
    loaded = bytes_to_state_dict(resp.data)
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])
    final = client.get(f"/api/v1/jobs/{job_id}/checkpoints/final/state_dict", headers=alice)
    assert final.headers["X-Checkpoint-Id"] == listing["checkpoints"][1]["id"]
    missing = client.get(f"/api/v1/jobs/{job_id}/checkpoints/best/state_dict", headers=alice)
    assert missing.status_code == 404
    assert (
        client.get(f"/api/v1/jobs/{job_id}/checkpoints/zzz/state_dict", headers=alice).status_code
        == 404
    )


def test_metrics_step_range_and_limit(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    rows = [
        {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": float(s)}
        for s in range(1, 101)
    ]
    with session_scope(sessions) as session:
        repository.record_metrics(session=session, job_id=uuid.UUID(job_id), rows=rows)
    url = f"/api/v1/jobs/{job_id}/metrics"
    body = client.get(f"{url}?from_step=95", headers=alice).get_json()
    assert [p["step"] for p in body["series"][0]["points"]] == [95, 96, 97, 98, 99, 100]
    assert body["truncated"] is False
    body = client.get(f"{url}?limit=10&to_step=50", headers=alice).get_json()
    assert [p["step"] for p in body["series"][0]["points"]] == list(range(1, 11))
    assert body["truncated"] is True


def test_trace_filters_glob_at_step_stat_and_downsampling(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    rows = []
    for s in range(1, 101):
        for layer in ("conv1", "conv2", "fc1", "fc_1"):
            row = _trace(s, layer, "backward", 50.0 if (layer == "fc1" and s == 37) else 1.0)
            rows.append(row)
    rows.append({**_trace(5, "fc1.weight", "param_grad", 2.0), "update_ratio": 0.01,
                 "mean": None, "histogram": [1.0, 3.0]})  # fmt: skip
    with session_scope(sessions) as session:
        repository.record_traces(session=session, job_id=uuid.UUID(job_id), rows=rows)
    url = f"/api/v1/jobs/{job_id}/traces"
    conv = client.get(f"{url}?layer=conv*&at_step=7", headers=alice).get_json()["traces"]
    assert [(t["layer"], t["step"]) for t in conv] == [("conv1", 7), ("conv2", 7)]
    # '_' is literal in a glob, not LIKE's any-character.
    assert {t["layer"] for t in client.get(f"{url}?layer=fc_1", headers=alice).get_json()[
        "traces"]} == {"fc_1"}  # fmt: skip
    only = client.get(f"{url}?at_step=7&stat=norm", headers=alice).get_json()["traces"][0]
    assert set(only) == {"step", "layer", "kind", "norm"}
    thin = client.get(f"{url}?layer=fc1&kind=backward&max_points=10", headers=alice).get_json()
    steps = [t["step"] for t in thin["traces"]]
    assert 10 <= len(steps) <= 30 and 37 in steps  # the spike survives thinning
    grad = client.get(f"{url}?kind=param_grad", headers=alice).get_json()["traces"][0]
    assert grad["update_ratio"] == 0.01 and grad["mean"] is None and grad["histogram"] == [1, 3]
    assert client.get(f"{url}?stat=bogus", headers=alice).status_code == 400
    assert client.get(f"{url}?max_points=0", headers=alice).status_code == 400


def test_downsampling_keeps_nan_spikes_and_at_step_excludes_a_range(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    job_id = submit(alice).get_json()["id"]
    rows = [_trace(s, "fc1", "backward", math.nan if s == 37 else 1.0) for s in range(1, 101)]
    with session_scope(sessions) as session:
        repository.record_traces(session=session, job_id=uuid.UUID(job_id), rows=rows)
    url = f"/api/v1/jobs/{job_id}/traces"
    thin = client.get(f"{url}?max_points=5", headers=alice).get_json()["traces"]
    assert any(t["step"] == 37 and t["norm"] == "NaN" for t in thin)
    assert client.get(f"{url}?at_step=3&from_step=1", headers=alice).status_code == 400


def test_traces_of_one_rank(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    """`rank` reads a distributed job's per-rank rows (hooks.per_rank), not the batch's."""
    job_id = submit(alice).get_json()["id"]
    whole = [_trace(1, "fc1", "backward", 2.0)]
    shares = [
        {"step": 1, "layer": "fc1", "kind": "backward", "rank": rank, "numel": 5,
         "norm": 1.0 + rank, "mean": None, "std": None, "min": None, "max": 0.5,
         "zero_frac": None, "nonfinite": None}
        for rank in (0, 1)
    ]  # fmt: skip
    with session_scope(sessions) as session:
        repository.record_traces(session=session, job_id=uuid.UUID(job_id), rows=whole)
        repository.record_rank_traces(session=session, job_id=uuid.UUID(job_id), rows=shares)
    url = f"/api/v1/jobs/{job_id}/traces"
    got = client.get(f"{url}?rank=1", headers=alice).get_json()["traces"]
    assert [(t["rank"], t["layer"], t["norm"], t["update_ratio"]) for t in got] == [
        (1, "fc1", 2.0, None)
    ]
    assert "rank" not in client.get(url, headers=alice).get_json()["traces"][0]
    thinned = client.get(f"{url}?rank=0&stat=update_ratio&max_points=5", headers=alice)
    assert thinned.status_code == 200
    assert client.get(f"{url}?rank=-1", headers=alice).status_code == 400
