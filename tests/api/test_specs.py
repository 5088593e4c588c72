"""Submit-time checks of the richer specs: each bad spec is refused naming where it is wrong."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.net.build import build_model
from shared.spec import JobSpec
from shared.spec_check import DryRunCache
from shared.tensors import sha256_hex, state_dict_to_bytes
from tests.support.fixture_types import Submit
from tests.support.specs import MLP, RESNETISH

DIGITS = {"dataset": "digits"}


def spec(
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"model": model or {"layers": MLP}, "data": data or DIGITS, "train": train or {}}


BAD_SPECS = [
    # (spec, expected status, a fragment of the message, the details loc)
    (
        spec(
            {
                "layers": [
                    {
                        "type": "Residual",
                        "name": "r",
                        "layers": [
                            {
                                "type": "Conv2d",
                                "in_channels": 1,
                                "out_channels": 4,
                                "kernel_size": 3,
                                "padding": 1,
                            }
                        ],
                    },
                    {"type": "Flatten"},
                    {"type": "Linear", "in_features": 256, "out_features": 10},
                ]
            }
        ),
        400,
        "'r' (Residual): body gives",
        "spec.model.layers[0]",
    ),
    (spec({"layers": MLP, "freeze": ["conv*"]}), 400, "conv*", "spec.model.freeze[0]"),
    (
        spec({"layers": MLP, "init": [{"params": "fc1.bias", "scheme": "xavier_uniform"}]}),
        400,
        "fc1.bias",
        "spec.model.init[0].scheme",
    ),
    (
        spec({"layers": MLP, "init": [{"params": "nope.*", "scheme": "zeros"}]}),
        400,
        "nope.*",
        "spec.model.init[0].params",
    ),
    (spec(data={"dataset": "mnist"}), 400, "TRAINYARD_DATA_DIR", "spec.data.dataset"),
    (
        spec(
            data={
                "dataset": "digits",
                "transforms": [{"type": "Normalize", "mean": [0.5, 0.5], "std": [1, 1]}],
            }
        ),
        400,
        "Normalize",
        "spec.data.transforms[0]",
    ),
    (
        spec(
            train={"scheduler": {"name": "ReduceLROnPlateau"}},
            data={"dataset": "digits", "val_fraction": 0},
        ),
        400,
        "val_fraction is 0",
        "spec",
    ),
    (spec(train={"loss": "NLLLoss", "label_smoothing": 0.1}), 400, "label_smoothing", "spec.train"),
    (spec(train={"precision": "fp16", "device": "cpu"}), 400, "autocast", "spec.train"),
    (spec(train={"epochs": 5000}), 400, "less than or equal to 1000", "spec.train.epochs"),
    (spec(train={"grad_clip": {}}), 400, "max_norm", "spec.train.grad_clip"),
    (
        spec({"layers": [{"type": "Embedding", "num_embeddings": 10, "embedding_dim": 4}]}),
        400,
        "tokens",
        "spec.model.layers[0]",
    ),
    # Distributed jobs: the operator's limit, whole nodes, a backend the device has, and
    # a sample for every process.
    (
        spec(train={"distributed": {"world_size": 9}}),
        400,
        "TRAINYARD_MAX_WORLD_SIZE",
        "spec.train.distributed.world_size",
    ),
    (
        spec(train={"distributed": {"world_size": 3, "nodes": 2}}),
        400,
        "does not split over 2 nodes",
        "spec.train.distributed",
    ),
    (
        spec(train={"distributed": {"world_size": 2, "backend": "nccl"}}),
        400,
        "nccl",
        "spec.train",
    ),
    (
        spec(
            data={
                "dataset": "synthetic",
                "task": "regression",
                "input_shape": [64],
                "size": 5,
                "val_fraction": 0.0,
            },
            train={"loss": "MSELoss", "distributed": {"world_size": 8}},
        ),
        400,
        "more than the 5 training samples",
        "spec.train.distributed.world_size",
    ),
    (spec(train={"distributed": {"world_size": 2, "nodez": 2}}), 400, "nodez", "spec.train"),
]


@pytest.mark.parametrize(("body", "status", "fragment", "loc"), BAD_SPECS)
def test_bad_specs_are_refused_naming_the_place(
    client: FlaskClient,
    alice: dict[str, str],
    body: dict[str, Any],
    status: int,
    fragment: str,
    loc: str,
    submit: Submit,
) -> None:
    resp = submit(alice, body)
    assert resp.status_code == status, resp.get_json()
    error = resp.get_json()["error"]
    assert fragment in error["message"]
    assert any(d["loc"].startswith(loc) for d in error["details"]), error["details"]


def test_operator_limits_from_settings(
    client: FlaskClient, alice: dict[str, str], settings: Any, submit: Submit
) -> None:
    settings.max_batch_size = 16
    resp = submit(alice, spec(train={"batch_size": 32}))
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"][0]["loc"] == "spec.train.batch_size"
    assert "at most 16" in resp.get_json()["error"]["message"]


def test_model_summary_is_print_model_and_named_parameters(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    body = spec({"layers": RESNETISH, "freeze": ["stem.*"]}, {"dataset": "digits"})
    resp = client.post("/api/v1/models/summary", json={"spec": body}, headers=alice)
    assert resp.status_code == 200, resp.get_json()
    summary = resp.get_json()
    model = build_model(JobSpec.model_validate(body).model)
    assert summary["module_tree"] == str(model)
    table = {p["name"]: p for p in summary["parameters"]}
    assert list(table) == [name for name, _ in model.named_parameters()]
    assert table["stem.weight"]["trainable"] is False and table["fc.weight"]["trainable"] is True
    assert table["block2.shortcut.0.weight"]["shape"] == [16, 8, 1, 1]
    assert summary["frozen_count"] == 8 * 1 * 3 * 3 + 8
    assert summary["output_shape"] == ["batch", 10]
    with sessions() as session:  # nothing was stored
        assert repository.list_jobs(session=session, owner="alice") == []
    bad = client.post(
        "/api/v1/models/summary", json={"spec": spec({"preset": "nope"})}, headers=alice
    )
    assert bad.status_code == 400
    assert client.post("/api/v1/models/summary", json={"spec": body}).status_code == 401


def _finished_job_with_checkpoint(sessions: sessionmaker[Session], owner: str) -> uuid.UUID:
    model = build_model(JobSpec.model_validate(spec()).model)
    blob = state_dict_to_bytes(model.state_dict())
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session, owner=owner, kind="train", spec=spec(), queue="train"
        )
        repository.save_checkpoint(
            session=session,
            job_id=job.id,
            step=10,
            epoch=1,
            tag="final",
            model_state=blob,
            optimizer_state=None,
            sha256=sha256_hex(blob),
        )
        return job.id


def test_init_from_is_checked_at_submit_time(
    client: FlaskClient,
    alice: dict[str, str],
    bob: dict[str, str],
    sessions: sessionmaker[Session],
    submit: Submit,
) -> None:
    source = _finished_job_with_checkpoint(sessions, "alice")
    # A new 5-class head: skip it, freeze the body.
    head5 = [*MLP[:3], {"type": "Linear", "name": "head", "in_features": 32, "out_features": 5}]
    data5 = {"dataset": "synthetic", "input_shape": [1, 8, 8], "num_classes": 5}
    fine = {
        "layers": head5,
        "freeze": ["fc1.*"],
        "init_from": {"job_id": str(source), "skip": ["head.*"]},
    }
    resp = submit(alice, spec(fine, data5))
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["spec"]["model"]["init_from"]["job_id"] == str(source)
    # Without skipping the head, strict loading cannot work: shapes differ.
    strict = {**fine, "init_from": {"job_id": str(source)}}
    resp = submit(alice, spec(strict, data5))
    assert resp.status_code == 400
    assert (
        "'head.weight' is (10, 32) in the checkpoint but (5, 32)"
        in (resp.get_json()["error"]["message"])
    )
    # Another owner's job, or a missing checkpoint, is "not found".
    assert submit(bob, spec(fine, data5)).status_code == 400
    missing = {**fine, "init_from": {"job_id": str(source), "checkpoint": "best"}}
    resp = submit(alice, spec(missing, data5))
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"][0]["loc"] == "spec.model.init_from"


def test_max_steps_alone_may_not_imply_too_many_epochs(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    # 1438 digits at batch 8192: one batch an epoch, so 10M steps would be 10M epochs.
    body = spec(train={"batch_size": 8192, "max_steps": 10_000_000})
    resp = submit(alice, body)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"][0]["loc"] == "spec.train.max_steps"
    assert submit(alice, spec(train={"batch_size": 64, "max_steps": 2000})).status_code == 202


def test_init_from_pins_the_checked_checkpoint(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session], submit: Submit
) -> None:
    source = _finished_job_with_checkpoint(sessions, "alice")
    body = spec({"layers": MLP, "init_from": {"job_id": str(source), "checkpoint": "latest"}})
    resp = submit(alice, body)
    assert resp.status_code == 202, resp.get_json()
    with sessions() as session:
        (ckpt,) = repository.list_checkpoints(session=session, job_id=source)
    assert resp.get_json()["spec"]["model"]["init_from"]["checkpoint"] == str(ckpt.id)


def test_nan_and_no_parameters_are_refused(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    nan_layers = [{"type": "Flatten"},
                  {"type": "LeakyReLU", "negative_slope": float("nan")},
                  {"type": "Linear", "in_features": 64, "out_features": 10}]  # fmt: skip
    resp = client.post(
        "/api/v1/jobs",
        data='{"kind": "train", "spec": '
        + __import__("json").dumps(spec({"layers": nan_layers}))
        + "}",
        headers=alice,
        content_type="application/json",
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"][0]["loc"] == "spec.model.layers[1].negative_slope"
    resp = submit(
        alice,
        spec({"layers": [{"type": "Flatten"}]}, {"dataset": "synthetic", "input_shape": [10]}),
    )
    assert resp.status_code == 400 and "no parameters" in resp.get_json()["error"]["message"]


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every model the process builds from a spec (the dry run's and build_model's)."""
    from shared.net import build, dryrun

    builds: list[str] = []
    for module in (build, dryrun):
        real = module.build_tree

        def counted(model: Any, real: Any = real, where: str = module.__name__) -> Any:
            builds.append(where)
            return real(model)

        monkeypatch.setattr(module, "build_tree", counted)
    return builds


def test_a_submission_and_a_summary_build_the_model_once(
    client: FlaskClient,
    alice: dict[str, str],
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    submit: Submit,
) -> None:
    source = _finished_job_with_checkpoint(sessions, "alice")
    monkeypatch.setattr("shared.spec_check._DRY_RUNS", DryRunCache())  # none ran before
    builds = _count_builds(monkeypatch)
    body = spec({"layers": MLP, "init_from": {"job_id": str(source), "checkpoint": "latest"}})
    assert submit(alice, body).status_code == 202
    assert builds == ["shared.net.dryrun"]  # the init_from check reuses the dry run's model
    resp = client.post("/api/v1/models/summary", json={"spec": body}, headers=alice)
    assert resp.status_code == 200, resp.get_json()
    assert submit(alice, body).status_code == 202
    assert builds == ["shared.net.dryrun"]  # the same model, data and loss: dry-run once
    wider = [*MLP[:1], {**MLP[1], "out_features": 48}, MLP[2], {**MLP[3], "in_features": 48}]
    assert submit(alice, spec({"layers": wider})).status_code == 202
    assert builds == ["shared.net.dryrun"] * 2  # another model is dry-run again


def test_check_init_from_leaves_the_checked_spec_alone(
    client: FlaskClient, alice: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    from shared.spec_check import check_spec
    from shared.validation import check_init_from, parse_spec

    source = _finished_job_with_checkpoint(sessions, "alice")
    body = spec({"layers": MLP, "init_from": {"job_id": str(source), "checkpoint": "latest"}})
    checked = check_spec(parse_spec(body))
    with sessions() as session:
        pinned = check_init_from(checked, session=session, owner="alice")
        (ckpt,) = repository.list_checkpoints(session=session, job_id=source)
    assert pinned == ckpt.id
    assert checked.spec.model.init_from is not None
    assert checked.spec.model.init_from.checkpoint == "latest"


def test_max_steps_epochs_are_counted_as_the_loader_batches(
    client: FlaskClient, alice: dict[str, str], settings: Any, submit: Submit
) -> None:
    # 1438 training digits at batch 3: 1438 % 3 == 1, so the loader drops the last batch
    # of one sample and an epoch is 479 steps (not 480): 959 steps take 3 epochs.
    settings.max_epochs = 2
    resp = submit(alice, spec(train={"batch_size": 3, "max_steps": 959}))
    assert resp.status_code == 400, resp.get_json()
    assert "3 epochs of 479 batches" in resp.get_json()["error"]["message"]
    assert submit(alice, spec(train={"batch_size": 3, "max_steps": 958})).status_code == 202


def test_the_steps_that_epochs_imply_are_within_the_limit(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    # 1000 epochs at batch 1 over 160,000 samples: 160M steps, whatever max_steps says.
    data = {"dataset": "synthetic", "size": 200_000, "input_shape": [4], "num_classes": 3}
    layers = [{"type": "Linear", "in_features": 4, "out_features": 3}]
    body = spec({"layers": layers}, data, {"epochs": 1000, "batch_size": 1})
    resp = submit(alice, body)
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert error["details"][0]["loc"] == "spec.train.epochs"
    assert "160,000,000 steps" in error["message"]
    assert submit(alice, {**body, "train": {"epochs": 1000, "batch_size": 64}}).status_code == 202


def test_a_distributed_spec_is_accepted_as_written(
    client: FlaskClient, alice: dict[str, str], submit: Submit
) -> None:
    body = spec(train={"batch_size": 16, "distributed": {"world_size": 2, "nodes": 2}})
    resp = submit(alice, body)
    assert resp.status_code == 202, resp.get_json()
    stored = client.get(f"/api/v1/jobs/{resp.get_json()['id']}", headers=alice).get_json()
    distributed = stored["spec"]["train"]["distributed"]
    assert distributed == {"world_size": 2, "nodes": 2, "backend": "auto"}
