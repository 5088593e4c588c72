"""StepPlan: the one count of batches, steps and epochs, which the loader and fit() follow."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from shared.spec import JobSpec, TrainSpec
from shared.spec_check import check_spec
from shared.steps import StepPlan
from worker.training.callbacks import Callback
from worker.training.data import make_loader
from worker.training.loop import fit


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 8, 16])
def test_batches_per_epoch_are_what_the_training_loader_yields(batch_size: int) -> None:
    for samples in range(2, 40):
        train = TrainSpec(batch_size=batch_size)
        loader = make_loader(
            TensorDataset(torch.zeros(samples, 1)), batch_size=batch_size, shuffle=True,
            seed=0, train=True,
        )  # fmt: skip
        plan = StepPlan.of(train, samples)
        assert plan.batches_per_epoch == len(loader) == sum(1 for _ in loader), samples


def test_steps_group_micro_batches_and_max_steps_caps_the_epochs() -> None:
    # 30 samples at batch 4: 8 batches (the last holds 2), 3 steps of up to 3 batches.
    plan = StepPlan.of(TrainSpec(batch_size=4, accumulate_steps=3, epochs=5), 30)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps, plan.epochs) == (
        8,
        3,
        15,
        5,
    )
    capped = StepPlan.of(TrainSpec(batch_size=4, accumulate_steps=3, epochs=5, max_steps=7), 30)
    assert (capped.total_steps, capped.epochs) == (7, 3)
    # A last batch of one sample is dropped: 33 samples at batch 4 are 8 batches, not 9.
    only_steps = StepPlan.of(TrainSpec(batch_size=4, max_steps=20), 33)
    assert (only_steps.batches_per_epoch, only_steps.epochs) == (8, 3)


class _Total(Callback):
    total = 0

    def on_fit_start(
        self, *, model: torch.nn.Module, total_steps: int, device: torch.device
    ) -> None:
        self.total = total_steps


def test_the_api_and_the_worker_count_the_same_steps_when_a_sample_is_left_over() -> None:
    # 41 synthetic samples, 8 for validation: 33 to train at batch 4, 33 % 4 == 1.
    spec = JobSpec.model_validate(
        {
            "model": {"preset": "my_model"},
            "data": {"dataset": "synthetic", "task": "regression", "size": 41},
            "train": {"loss": "MSELoss", "batch_size": 4, "max_steps": 20},
        }
    )
    checked = check_spec(spec)
    assert (checked.plan.samples, checked.plan.batches_per_epoch, checked.plan.epochs) == (33, 8, 3)
    seen = _Total()
    result = fit(spec, callbacks=[seen])
    assert seen.total == checked.plan.total_steps == result.steps == 20
    assert result.epochs == checked.plan.epochs
