"""fit(): losses, callbacks, checkpoints, early stop, determinism, and a plain-PyTorch twin."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from shared.errors import SpecError
from shared.net.build import build_model
from shared.spec import JobSpec
from shared.tensors import sha256_hex
from tests.support.callbacks import Recorder
from worker.training.callbacks import Callback
from worker.training.checkpoint import restore_model
from worker.training.data import make_datasets
from worker.training.diagnose import TrainingDiverged
from worker.training.loop import fit
from worker.training.probes import TraceRow


def my_model_job(**train: Any) -> JobSpec:
    """MyModel (10 -> 5 -> 1) on 40 synthetic regression samples: fast."""
    return JobSpec.model_validate(
        {
            "model": {"preset": "my_model"},
            "data": {
                "dataset": "synthetic",
                "task": "regression",
                "size": 40,
                "val_fraction": 0.25,
            },
            "train": {"loss": "MSELoss", "batch_size": 8, "seed": 3, **train},
            "hooks": {"every_n_steps": 2},
        }
    )


CLASSIFIER = [
    {"type": "Flatten"},
    {"type": "Linear", "name": "fc1", "in_features": 64, "out_features": 16},
    {"type": "ReLU", "inplace": True},
    {"type": "Linear", "name": "fc2", "in_features": 16, "out_features": 10},
]


@pytest.mark.parametrize(
    ("data", "loss"),
    [
        ({"dataset": "digits"}, "CrossEntropyLoss"),
        ({"dataset": "digits"}, "MSELoss"),
        ({"dataset": "synthetic", "input_shape": [64], "size": 64}, "CrossEntropyLoss"),
        ({"dataset": "synthetic", "input_shape": [8, 8], "size": 64}, "MSELoss"),
    ],
)
def test_classification_for_each_loss(data: dict[str, Any], loss: str) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"layers": CLASSIFIER},
            "data": data,
            "train": {"loss": loss, "epochs": None, "max_steps": 12, "batch_size": 32, "seed": 1},
        }
    )
    cb = Recorder()
    result = fit(spec, callbacks=[cb])
    assert result.steps == 12 and not result.stopped
    assert result.device == "cpu"
    assert set(result.metrics) == {"train_loss", "val_loss", "val_accuracy"}
    assert 0.0 <= result.metrics["val_accuracy"] <= 1.0
    assert all(math.isfinite(v) for v in cb.losses)
    # backward rows for fc1 (output of the Linear before the in-place ReLU) and fc2.
    assert {(r.kind, r.layer) for r in cb.traces[1]} >= {("backward", "fc1"), ("backward", "fc2")}


def test_regression_learns_and_reports_everything() -> None:
    cb = Recorder()
    result = fit(my_model_job(epochs=3, optimizer={"name": "Adam", "lr": 0.05}), callbacks=[cb])

    assert cb.calls == ["fit_start", "fit_end"] and cb.result is result
    assert cb.total_steps == 12 == result.steps  # 30 train samples / batch 8 = 4 batches
    assert cb.steps == list(range(1, 13))
    assert sorted(cb.traces) == [1, 2, 4, 6, 8, 10, 12]
    assert result.epochs == 3 and result.final_loss == cb.losses[-1]
    assert [(step, epoch) for step, epoch, _ in cb.epochs] == [(4, 1), (8, 2), (12, 3)]
    assert set(result.metrics) == {"train_loss", "val_loss"}  # no accuracy for regression
    assert result.metrics["train_loss"] == pytest.approx(sum(cb.losses[8:]) / 4)
    assert cb.epochs[-1][2]["train_loss"] < cb.epochs[0][2]["train_loss"]
    assert result.param_count == result.trainable_count == 61
    assert result.steps_per_s > 0

    assert [(b.tag, b.step, b.epoch) for b in cb.blobs] == [
        ("epoch", 4, 1),
        ("epoch", 8, 2),
        ("epoch", 12, 3),
        ("final", 12, 3),
    ]
    final = cb.blobs[-1]
    assert final.sha256 == sha256_hex(final.model_state) and final.size == len(final.model_state)


def test_checkpoints_restore() -> None:
    cb = Recorder()
    fit(my_model_job(epochs=1, optimizer={"name": "Adam"}), callbacks=[cb])
    blob = cb.blobs[-1]

    fresh = build_model(my_model_job().model)
    restore_model(fresh, blob.model_state)
    optimizer = torch.optim.Adam(fresh.parameters())
    # The optimizer state is plain tensors and numbers: weights_only loading takes it.
    saved = torch.load(io.BytesIO(blob.optimizer_state), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved)
    assert optimizer.state_dict()["state"][0]["step"] == 4

    renamed = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1))  # keys 0.*, 2.*
    with pytest.raises(RuntimeError, match="Missing key"):
        restore_model(renamed, blob.model_state)
    restore_model(renamed, blob.model_state, strict=False)


def test_max_steps_only_runs_over_epochs() -> None:
    cb = Recorder()
    result = fit(my_model_job(epochs=None, max_steps=10), callbacks=[cb])
    assert result.steps == 10 and result.epochs == 3
    # The last, partial epoch is still evaluated and checkpointed.
    assert [(step, epoch) for step, epoch, _ in cb.epochs] == [(4, 1), (8, 2), (10, 3)]
    assert [b.tag for b in cb.blobs] == ["epoch", "epoch", "epoch", "final"]


def test_parameter_limit_is_passed_to_the_dry_run() -> None:
    with pytest.raises(SpecError, match="61 parameters; at most 60"):
        fit(my_model_job(max_steps=1), max_params=60)


def test_max_steps_caps_epochs() -> None:
    assert fit(my_model_job(epochs=5, max_steps=6)).steps == 6


def test_should_stop_stops_early() -> None:
    cb = Recorder(stop_after=5)
    result = fit(my_model_job(epochs=10), callbacks=[cb])
    assert result.stopped and result.steps == 5 and cb.steps == [1, 2, 3, 4, 5]
    assert [(b.tag, b.step) for b in cb.blobs] == [("epoch", 4), ("final", 5)]
    assert result.metrics == cb.epochs[-1][2]  # the last completed epoch's metrics


def test_same_seed_same_losses() -> None:
    first, second = Recorder(), Recorder()
    fit(my_model_job(epochs=2, optimizer={"momentum": 0.9}), callbacks=[first])
    fit(my_model_job(epochs=2, optimizer={"momentum": 0.9}), callbacks=[second])
    assert first.losses == second.losses
    assert first.blobs[-1].sha256 == second.blobs[-1].sha256


def test_loss_equals_a_plain_pytorch_loop() -> None:
    spec = my_model_job(epochs=None, max_steps=6, optimizer={"lr": 0.05, "momentum": 0.5})
    cb = Recorder()
    fit(spec, callbacks=[cb])

    # The seed's loop, written out by hand with the seed's own class.
    class MyModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(10, 5)
            self.fc2 = nn.Linear(5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    torch.manual_seed(3)
    model = MyModel()
    train = make_datasets(spec.data, seed=3, loss="MSELoss", data_dir=None).train
    loader = DataLoader(
        train, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    criterion = nn.MSELoss()
    losses: list[float] = []
    while len(losses) < 6:
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == 6:
                break
    assert cb.losses == losses


def test_divergence_is_reported_with_the_step() -> None:
    spec = my_model_job(epochs=5, optimizer={"lr": 10.0})
    model_seen: list[nn.Module] = []

    class Grab(Callback):
        def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
            model_seen.append(model)

    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at step \d+"):
        fit(spec, callbacks=[Grab()])
    # Hooks are removed even though fit failed.
    assert all(not m._forward_hooks for m in model_seen[0].modules())


def test_cuda_without_cuda_is_a_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpecError, match=r"train\.device is 'cuda' but this worker has no CUDA"):
        fit(my_model_job(max_steps=1, device="cuda"))
    with pytest.raises(SpecError):
        fit(my_model_job(max_steps=1), device="cuda")
    assert fit(my_model_job(max_steps=1, device="auto")).device == "cpu"


class ErrorSeen(Recorder):
    """A Recorder that also keeps what on_fit_error received."""

    def __init__(self, raise_at_step: BaseException | None = None) -> None:
        super().__init__()
        self.raise_at_step = raise_at_step
        self.errors: list[BaseException] = []

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        super().on_step_end(step=step, epoch=epoch, loss=loss, traces=traces)
        if self.raise_at_step is not None and step == 2:
            raise self.raise_at_step

    def on_fit_error(self, *, error: BaseException) -> None:
        self.errors.append(error)


def test_on_fit_error_sees_every_failure_once_and_fit_end_never() -> None:
    diverging = ErrorSeen()
    with pytest.raises(TrainingDiverged) as caught:
        fit(my_model_job(epochs=5, optimizer={"lr": 10.0}), callbacks=[diverging])
    assert diverging.errors == [caught.value] and diverging.calls == ["fit_start"]

    refused = ErrorSeen()  # before the first step: setup refuses the spec
    with pytest.raises(SpecError) as spec_error:
        fit(my_model_job(max_steps=1), callbacks=[refused], max_params=60)
    assert refused.errors == [spec_error.value] and refused.calls == []

    interrupted = ErrorSeen(raise_at_step=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        fit(my_model_job(max_steps=5), callbacks=[interrupted])
    assert len(interrupted.errors) == 1 and isinstance(interrupted.errors[0], KeyboardInterrupt)
    assert interrupted.steps == [1, 2] and interrupted.result is None
