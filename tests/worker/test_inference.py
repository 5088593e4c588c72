"""Inference jobs on the real PostgreSQL: predictions, eval mode, transforms, the model cache."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job
from shared.net.build import build_model
from shared.spec import JobSpec
from shared.tensors import bytes_to_state_dict
from worker.inference import LoadedModel, ModelCache, load_model
from worker.tasks import execute_infer, execute_train

CLASSIFIER = {
    "model": {
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "name": "fc1", "in_features": 64, "out_features": 32},
            {"type": "ReLU"},
            {"type": "Dropout", "p": 0.5},
            {"type": "Linear", "name": "fc2", "in_features": 32, "out_features": 10},
        ]
    },
    "data": {
        "dataset": "digits",
        "val_fraction": 0.2,
        "transforms": [{"type": "Normalize", "mean": [0.3], "std": [0.4]}],
    },
    "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "Adam", "lr": 0.01}},
}
REGRESSOR = {
    "model": {"preset": "my_model"},
    "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10], "size": 64},
    "train": {"loss": "MSELoss", "batch_size": 8},
}


def _trained(sessions: sessionmaker[Session], settings: Settings, spec: dict[str, Any]) -> Job:
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session, owner="o", kind="train", spec=spec, queue="train"
        )
    assert execute_train(job.id, worker="w", sessions=sessions, settings=settings) == "succeeded"
    return job


def _infer_job(
    sessions: sessionmaker[Session], source: Job, inputs: Any, ref: str = "final"
) -> uuid.UUID:
    with session_scope(sessions) as session:
        ckpt = repository.get_checkpoint(session=session, job_id=source.id, ref=ref)
        spec = {
            "model_job_id": str(source.id),
            "checkpoint": ref,
            "checkpoint_id": str(ckpt.id),
            "inputs": inputs,
        }
        job = repository.create_job(
            session=session, owner="o", kind="infer", spec=spec, queue="infer"
        )
        return job.id


def _run(
    sessions: sessionmaker[Session], settings: Settings, job_id: uuid.UUID, cache: ModelCache
) -> Job:
    execute_infer(job_id, worker="i", sessions=sessions, settings=settings, cache=cache)
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _reference_model(sessions: sessionmaker[Session], source: Job) -> nn.Module:
    """The seed's way: build the model, load_state_dict the downloaded weights, eval()."""
    with sessions() as session:
        state = repository.get_checkpoint(session=session, job_id=source.id, ref="final")
        weights = bytes_to_state_dict(state.model_state)
    model = build_model(JobSpec.model_validate(source.spec).model)
    model.load_state_dict(weights)
    return model.eval()


def test_predictions_match_the_checkpoint_in_eval_mode_with_the_eval_transforms(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    source = _trained(sessions, settings, CLASSIFIER)
    batch = torch.rand(5, 1, 8, 8)
    cache = ModelCache(10 * 2**20)
    job = _run(sessions, settings, _infer_job(sessions, source, batch.tolist()), cache)
    assert job.status == "succeeded", job.error
    assert job.summary is not None
    outputs = job.summary["outputs"]
    model = _reference_model(sessions, source)
    with torch.no_grad():
        logits = model((batch - 0.3) / 0.4)  # the job's Normalize, applied by the worker
    probs = nn.Softmax(dim=1)(logits)
    assert job.summary["task"] == "classification" and job.summary["samples"] == 5
    assert [o["predicted_class"] for o in outputs] == probs.argmax(1).tolist()
    got = torch.tensor([o["logits"] for o in outputs])
    torch.testing.assert_close(got, logits, rtol=1e-5, atol=1e-5)  # Dropout was off
    torch.testing.assert_close(torch.tensor([o["probabilities"] for o in outputs]), probs)
    assert all(abs(sum(o["probabilities"]) - 1.0) < 1e-5 for o in outputs)
    assert job.summary["cached_model"] is False and job.summary["model_job_id"] == str(source.id)


def test_one_sample_without_a_batch_dimension(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    source = _trained(sessions, settings, CLASSIFIER)
    sample = torch.rand(1, 8, 8)
    job = _run(sessions, settings, _infer_job(sessions, source, sample.tolist()), ModelCache(2**24))
    assert job.summary is not None and job.summary["samples"] == 1


def test_a_warm_prediction_reads_no_weights(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = _trained(sessions, settings, CLASSIFIER)
    cache = ModelCache(10 * 2**20)
    inputs = torch.rand(2, 1, 8, 8).tolist()
    cold = _run(sessions, settings, _infer_job(sessions, source, inputs), cache)
    second = _infer_job(sessions, source, inputs)

    def no_reads(**kwargs: Any) -> None:
        raise AssertionError("a cached model must not read its checkpoint again")

    monkeypatch.setattr("worker.tasks.repository.get_checkpoint", no_reads)
    warm = _run(sessions, settings, second, cache)
    assert warm.status == "succeeded", warm.error
    assert cold.summary is not None and warm.summary is not None
    assert warm.summary["cached_model"] is True and cache.hits == 1 and cache.misses == 1
    assert warm.summary["outputs"] == cold.summary["outputs"]


def test_regression_gives_the_raw_outputs(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    source = _trained(sessions, settings, REGRESSOR)
    x = torch.randn(3, 10)
    job = _run(sessions, settings, _infer_job(sessions, source, x.tolist()), ModelCache(2**24))
    assert job.status == "succeeded", job.error
    assert job.summary is not None and job.summary["task"] == "regression"
    with torch.no_grad():
        expected = _reference_model(sessions, source)(x)
    got = torch.tensor([o["output"] for o in job.summary["outputs"]])
    torch.testing.assert_close(got, expected)


def test_bad_inputs_fail_the_job_with_a_message_not_the_worker(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    # The API refuses these; a job row written some other way still fails cleanly.
    source = _trained(sessions, settings, CLASSIFIER)
    job = _run(sessions, settings, _infer_job(sessions, source, [[1.0, 2.0]]), ModelCache(2**24))
    assert job.status == "failed"
    assert job.error is not None and job.error.startswith("inputs: shape [1, 2]")


def _loaded(nbytes: int) -> LoadedModel:
    spec = JobSpec.model_validate(REGRESSOR)
    model = nn.Linear(1, 1)
    return LoadedModel(model, spec, None, torch.device("cpu"), nbytes)


def test_the_cache_evicts_the_least_recently_used_model_by_bytes() -> None:
    cache = ModelCache(max_bytes=100)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(a, _loaded(40))
    cache.put(b, _loaded(40))
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, _loaded(40))  # 120 bytes: b goes
    assert a in cache and c in cache and b not in cache and cache.used_bytes == 80
    cache.put(uuid.uuid4(), _loaded(500))  # larger than the cache: used, not kept
    assert len(cache) == 2


def test_a_loaded_model_is_in_eval_mode_without_gradients(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    source = _trained(sessions, settings, CLASSIFIER)
    with sessions() as session:
        state = repository.get_checkpoint(session=session, job_id=source.id, ref="final")
        blob = state.model_state
    loaded = load_model(JobSpec.model_validate(source.spec), blob, torch.device("cpu"))
    assert not loaded.model.training and not any(m.training for m in loaded.model.modules())
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.nbytes == (64 * 32 + 32 + 32 * 10 + 10) * 4


def test_one_owners_batch_does_not_hold_the_queue_from_another_owner(
    sessions: sessionmaker[Session], settings: Settings, clean_db: None
) -> None:
    """Owner A queues three predictions, then B one; A's first is running (on another
    worker). The next turn goes to B's, not to A's second: fair share, as for training."""
    source = _trained(sessions, settings, REGRESSOR)
    first, second, third = (_infer_job(sessions, source, [0.0] * 10) for _ in range(3))
    with session_scope(sessions) as session:
        ckpt = repository.get_checkpoint(session=session, job_id=source.id, ref="final")
        spec = {"model_job_id": str(source.id), "checkpoint": "final",
                "checkpoint_id": str(ckpt.id), "inputs": [0.5] * 10}  # fmt: skip
        other = repository.create_job(
            session=session, owner="b", kind="infer", spec=spec, queue="infer"
        ).id
        assert repository.claim_job(session=session, job_id=first, worker="elsewhere",
                                    lease_seconds=60, max_attempts=3) is not None  # fmt: skip
    # The turn of A's second message.
    execute_infer(second, worker="i", sessions=sessions, settings=settings,
                  cache=ModelCache(2**26))  # fmt: skip
    with sessions() as session:
        states = {j: session.get(Job, j).status for j in (second, third, other)}  # type: ignore[union-attr]
    assert states == {second: "queued", third: "queued", other: "succeeded"}
