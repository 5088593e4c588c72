"""fit() options: optimizers, schedules, losses, clipping, accumulation, early stopping,
test split, freezing and fine-tuning from a checkpoint."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from shared.errors import SpecError
from shared.net.build import build_model
from shared.spec import JobSpec
from tests.support.callbacks import Recorder
from worker.training.checkpoint import restore_model
from worker.training.data import make_datasets, make_loader
from worker.training.evaluate import evaluate
from worker.training.loop import fit


class MetricLog(Recorder):
    """Also keeps on_metrics calls."""

    def __init__(self) -> None:
        super().__init__()
        self.extra: list[tuple[int, str, dict[str, float]]] = []

    def on_metrics(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        self.extra.append((step, split, values))


def job(train: dict[str, Any], data: dict[str, Any] | None = None, **model: Any) -> JobSpec:
    """A small classifier on 64 synthetic samples of 16 features, 4 classes."""
    layers = [
        {"type": "Linear", "name": "fc1", "in_features": 16, "out_features": 12},
        {"type": "ReLU"},
        {"type": "Linear", "name": "fc2", "in_features": 12, "out_features": 4},
    ]
    return JobSpec.model_validate(
        {
            "model": {"layers": layers, **model},
            "data": {
                "dataset": "synthetic",
                "input_shape": [16],
                "num_classes": 4,
                "size": 80,
                "val_fraction": 0.2,
                **(data or {}),
            },
            "train": {"batch_size": 8, "seed": 5, **train},
            "hooks": {"every_n_steps": 4},
        }
    )


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_each_optimizer_trains(name: str) -> None:
    cb = Recorder()
    fit(job({"epochs": 4, "optimizer": {"name": name, "lr": 0.01}}), callbacks=[cb])
    first, last = cb.epochs[0][2]["train_loss"], cb.epochs[-1][2]["train_loss"]
    assert last < first


@pytest.mark.parametrize(
    ("loss", "extra"),
    [
        ("CrossEntropyLoss", {"label_smoothing": 0.1}),
        ("NLLLoss", {}),
        ("MSELoss", {}),
        ("L1Loss", {}),
        ("SmoothL1Loss", {}),
        ("BCEWithLogitsLoss", {}),
    ],
)
def test_each_loss_runs_and_reports_accuracy(loss: str, extra: dict[str, Any]) -> None:
    result = fit(job({"epochs": 1, "loss": loss, **extra}))
    assert 0.0 <= result.metrics["val_accuracy"] <= 1.0
    assert result.metrics["val_loss"] == result.metrics["val_loss"]  # not NaN


def _plain_losses(spec: JobSpec, hook: Any) -> list[float]:
    """The seed's loop written out, with `hook(model, optimizer)` between backward and step."""
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model)
    splits = make_datasets(spec.data, seed=spec.train.seed, loss=spec.train.loss, data_dir=None)
    loader = make_loader(
        splits.train, batch_size=spec.train.batch_size, shuffle=True, seed=spec.train.seed,
        train=True,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.train.optimizer.lr)
    losses = []
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        hook(model, optimizer)
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_grad_clipping_matches_torch_utils() -> None:
    spec = job({"epochs": 1, "optimizer": {"lr": 0.5}, "grad_clip": {"max_norm": 0.05}})
    cb = Recorder()
    fit(spec, callbacks=[cb])
    expected = _plain_losses(spec, lambda m, _: nn.utils.clip_grad_norm_(m.parameters(), 0.05))
    assert cb.losses == expected
    unclipped = _plain_losses(spec, lambda m, _: None)
    assert cb.losses != unclipped  # clipping changed the trajectory
    spec = job({"epochs": 1, "optimizer": {"lr": 0.5}, "grad_clip": {"max_value": 0.01}})
    cb = Recorder()
    fit(spec, callbacks=[cb])
    assert cb.losses == _plain_losses(
        spec, lambda m, _: nn.utils.clip_grad_value_(m.parameters(), 0.01)
    )


def test_accumulation_equals_a_bigger_batch() -> None:
    # Two micro-batches of 8 with the loss halved give the gradients of one batch of 16.
    small = Recorder()
    fit(job({"epochs": 1, "batch_size": 8, "accumulate_steps": 2}), callbacks=[small])
    big = Recorder()
    fit(job({"epochs": 1, "batch_size": 16}), callbacks=[big])
    assert small.steps == big.steps == [1, 2, 3, 4]
    assert small.losses == pytest.approx(big.losses, rel=1e-5)
    # Traces come from the summed gradient: one row per layer, not one per micro-batch.
    rows = small.traces[4]
    assert len(rows) == len({(r.layer, r.kind) for r in rows})


def test_step_lr_schedule_is_logged() -> None:
    cb = MetricLog()
    spec = job(
        {
            "epochs": 3,
            "optimizer": {"lr": 0.1},
            "scheduler": {"name": "StepLR", "step_size": 1, "gamma": 0.5},
        }
    )
    fit(spec, callbacks=[cb])
    lrs = [(step, v["lr"]) for step, split, v in cb.extra if split == "train"]
    assert lrs == [(1, 0.1), (9, 0.05), (17, 0.025)]  # 8 steps per epoch


def test_one_cycle_steps_every_batch_and_plateau_watches_a_metric() -> None:
    cb = MetricLog()
    spec = job({"epochs": 2, "scheduler": {"name": "OneCycleLR", "max_lr": 0.1}})
    fit(spec, callbacks=[cb])
    assert len([1 for _, split, _ in cb.extra if split == "train"]) == 16
    spec = job(
        {
            "epochs": 4,
            "optimizer": {"lr": 1e-5},
            "scheduler": {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5},
        }
    )
    cb = MetricLog()
    fit(spec, callbacks=[cb])
    assert [v["lr"] for _, _, v in cb.extra][-1] < 1e-5


def test_early_stopping_keeps_best_checkpoint() -> None:
    spec = job(
        {
            "epochs": 50,
            "optimizer": {"lr": 0.5},
            "early_stopping": {"monitor": "val_loss", "patience": 2},
        }
    )
    cb = Recorder()
    result = fit(spec, callbacks=[cb])
    assert result.stopped_early and result.epochs < 50 and result.best_epoch is not None
    best = [b for b in cb.blobs if b.tag == "best"]
    assert best[-1].epoch == result.best_epoch
    val = [m["val_loss"] for _, _, m in cb.epochs]
    assert min(val) == val[result.best_epoch - 1]
    assert result.epochs == result.best_epoch + 2


def test_test_split_is_evaluated_once_at_the_end() -> None:
    cb = MetricLog()
    result = fit(job({"epochs": 2}, data={"test_fraction": 0.25}), callbacks=[cb])
    tests = [(split, v) for _, split, v in cb.extra if split == "test"]
    assert len(tests) == 1 and set(tests[0][1]) == {"loss", "accuracy"}
    assert result.metrics["test_accuracy"] == tests[0][1]["accuracy"]


def test_frozen_layers_do_not_change() -> None:
    cb = Recorder()
    result = fit(job({"epochs": 2, "optimizer": {"lr": 0.5}}, freeze=["fc1.*"]), callbacks=[cb])
    assert result.trainable_count == 12 * 4 + 4
    from shared.tensors import bytes_to_state_dict

    torch.manual_seed(5)
    initial = build_model(job({"epochs": 1}).model).state_dict()
    final = bytes_to_state_dict(cb.blobs[-1].model_state)
    assert torch.equal(final["fc1.weight"], initial["fc1.weight"])
    assert not torch.equal(final["fc2.weight"], initial["fc2.weight"])
    assert not any(r.layer.startswith("fc1.") and r.kind == "param_grad"
                   for rows in cb.traces.values() for r in rows)  # fmt: skip


def test_fine_tune_from_checkpoint_with_a_new_head() -> None:
    first = Recorder()
    fit(job({"epochs": 1}), callbacks=[first])
    blob = first.blobs[-1].model_state
    init_from = {"job_id": "00000000-0000-0000-0000-000000000001", "skip": ["fc2.*"]}
    spec = job({"epochs": 1, "optimizer": {"lr": 1e-9}}, init_from=init_from, freeze=["fc1.*"])
    second = Recorder()
    fit(spec, callbacks=[second], initial_state=blob)
    from shared.tensors import bytes_to_state_dict

    before, after = bytes_to_state_dict(blob), bytes_to_state_dict(second.blobs[-1].model_state)
    assert torch.equal(before["fc1.weight"], after["fc1.weight"])  # loaded, frozen
    assert not torch.equal(before["fc2.weight"], after["fc2.weight"])  # skipped: fresh head
    strict = job({"epochs": 1}, init_from={**init_from, "skip": ["fc9.*"]})
    wide = JobSpec.model_validate(
        {**strict.model_dump(), "model": {**strict.model_dump()["model"], "layers": [
            {"type": "Linear", "name": "fc1", "in_features": 16, "out_features": 7},
            {"type": "ReLU"},
            {"type": "Linear", "name": "fc2", "in_features": 7, "out_features": 4}]}}
    )  # fmt: skip
    with pytest.raises(SpecError, match=r"'fc1.weight' is \(12, 16\) in the checkpoint"):
        fit(wide, initial_state=blob)


def test_precision_is_autocast_on_cuda_only() -> None:
    with pytest.raises(ValidationError, match="set device 'cuda'"):
        job({"epochs": 1, "precision": "bf16"})  # "auto" may land on a CPU worker
    spec = job({"epochs": 1, "precision": "bf16", "device": "cuda"})
    if torch.cuda.is_available():
        assert fit(spec).device.startswith("cuda")
    else:
        with pytest.raises(SpecError, match="CUDA"):
            fit(spec)


def test_monitor_mode_follows_the_metric() -> None:
    spec = job(
        {
            "epochs": 2,
            "early_stopping": {"monitor": "val_accuracy"},
            "scheduler": {"name": "ReduceLROnPlateau", "monitor": "val_accuracy"},
        }
    )
    assert spec.train.early_stopping is not None and spec.train.early_stopping.mode == "max"
    assert spec.train.scheduler is not None and spec.train.scheduler.mode == "max"
    assert job({"epochs": 1, "early_stopping": {}}).train.early_stopping.mode == "min"  # type: ignore[union-attr]


def test_test_metrics_use_the_best_epoch_weights() -> None:
    spec = job({"epochs": 30, "optimizer": {"lr": 0.5},
                "early_stopping": {"monitor": "val_loss", "patience": 2}},
               data={"test_fraction": 0.2})  # fmt: skip
    cb = MetricLog()
    result = fit(spec, callbacks=[cb])
    assert result.best_epoch is not None and result.epochs > result.best_epoch
    best = [b for b in cb.blobs if b.tag == "best"][-1]
    torch.manual_seed(0)
    model = build_model(spec.model)
    restore_model(model, best.model_state)
    test = make_datasets(spec.data, seed=spec.train.seed, loss=spec.train.loss, data_dir=None).test
    assert test is not None
    loader = make_loader(test, batch_size=8, shuffle=False, seed=0)
    expected = evaluate(model, loader, nn.CrossEntropyLoss(), torch.device("cpu"), True, "test")
    assert result.metrics["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)


def test_frozen_batchnorm_keeps_its_running_statistics() -> None:
    layers = [
        {"type": "Linear", "name": "fc1", "in_features": 16, "out_features": 12},
        {"type": "BatchNorm1d", "name": "bn", "num_features": 12},
        {"type": "ReLU"},
        {"type": "Linear", "name": "fc2", "in_features": 12, "out_features": 4},
    ]
    spec = JobSpec.model_validate({**job({"epochs": 2}).model_dump(), "model": {
        "layers": layers, "freeze": ["fc1.*", "bn.*"]}})  # fmt: skip
    cb = Recorder()
    fit(spec, callbacks=[cb])
    from shared.tensors import bytes_to_state_dict

    final = bytes_to_state_dict(cb.blobs[-1].model_state)
    assert torch.equal(final["bn.running_mean"], torch.zeros(12))
    assert int(final["bn.num_batches_tracked"]) == 0
