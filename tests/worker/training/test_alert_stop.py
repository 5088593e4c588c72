"""hooks.alerts rules (vanishing for K steps, dead units) and `stop`, on plain PyTorch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.spec import AlertSpec, JobSpec
from worker.training.alerts import AlertStop, AlertWatcher
from worker.training.loop import fit
from worker.training.probes import TraceRow


def row(step: int, norm: float, *, kind: str = "param_grad", zero_frac: float | None = None,
        layer: str = "fc.weight") -> TraceRow:  # fmt: skip
    return TraceRow(step=step, layer=layer, kind=kind, numel=10, norm=norm, mean=None,
                    std=None, min=None, max=None, zero_frac=zero_frac, nonfinite=None)  # fmt: skip


def test_vanishing_counts_only_after_k_logged_steps_in_a_row() -> None:
    watcher = AlertWatcher(AlertSpec(vanishing_below=1e-3, vanishing_steps=3))
    assert watcher.check([row(1, 1e-4)]) == [] and watcher.check([row(2, 1e-4)]) == []
    assert watcher.check([row(3, 1.0)]) == []  # the streak breaks
    assert watcher.check([row(4, 1e-4)]) == [] and watcher.check([row(5, 1e-4)]) == []
    (event,) = watcher.check([row(6, 1e-4)])
    assert event.kind == "vanishing_gradient" and "'fc.weight'" in event.message
    assert event.data["step"] == 6
    assert watcher.check([row(7, 1e-5)]) == []  # once per layer


def test_a_mostly_zero_output_is_dead() -> None:
    watcher = AlertWatcher(AlertSpec(dead_above=0.9))
    assert watcher.check([row(1, 1.0, kind="forward", zero_frac=0.5, layer="relu")]) == []
    (event,) = watcher.check([row(2, 1.0, kind="forward", zero_frac=0.97, layer="relu")])
    assert event.kind == "dead_units" and "97% zeros" in event.message


def test_stop_ends_training_at_the_first_alert_and_says_where() -> None:
    spec = JobSpec.model_validate({
        "model": {"preset": "neural_network"},
        "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "SGD", "lr": 10.0}},
        "hooks": {"alerts": {"exploding_above": 1000.0, "stop": True}},
    })  # fmt: skip
    stop = AlertStop()
    result = fit(spec, callbacks=[stop])
    assert result.stopped and result.steps < 23  # within the first epoch (23 steps)
    assert stop.reason is not None and "'linear_relu_stack." in stop.reason
    assert stop.reason.startswith("exploding gradient:")


def test_dead_above_needs_forward_hooks() -> None:
    with pytest.raises(ValidationError, match="dead_above needs 'forward'"):
        JobSpec.model_validate({
            "model": {"preset": "neural_network"}, "data": {"dataset": "digits"},
            "hooks": {"alerts": {"dead_above": 0.9}},
        })  # fmt: skip
