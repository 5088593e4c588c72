"""check_spec, the one checking entry point, and load_stored_spec, the one way back."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import LimitExceeded, SpecError
from shared.spec import JobSpec
from shared.spec_check import SpecLimits, check_spec, load_stored_spec

MLP = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28},
    "train": {"epochs": 2, "batch_size": 64},
}


def test_check_spec_returns_the_meta_model_the_dry_run_and_the_plan() -> None:
    checked = check_spec(JobSpec.model_validate(MLP))
    assert all(p.is_meta for p in checked.model.parameters())
    assert checked.dry_run.param_count == sum(p.numel() for p in checked.model.parameters())
    assert checked.dry_run.output_shape == (2, 10)
    # 1797 digits, 359 for validation: 1438 to train, 23 batches of 64 (the last of 30).
    assert (checked.plan.samples, checked.plan.batches_per_epoch) == (1438, 23)
    assert checked.plan.total_steps == 46
    assert checked.state_shapes()["linear_relu_stack.0.weight"] == (512, 784)


@pytest.mark.parametrize(
    ("limits", "error", "loc"),
    [
        (SpecLimits(max_epochs=1), SpecError, "train.epochs"),
        (SpecLimits(max_batch_size=32), SpecError, "train.batch_size"),
        (SpecLimits(max_params=1000), SpecError, "model.preset"),
        (SpecLimits(max_train_memory_mb=1), LimitExceeded, "train.batch_size"),
    ],
)
def test_errors_locate_fields_relative_to_the_spec(
    limits: SpecLimits, error: type[Exception], loc: str
) -> None:
    with pytest.raises(error) as caught:
        check_spec(JobSpec.model_validate(MLP), limits=limits)
    assert isinstance(caught.value, SpecError | LimitExceeded)
    assert caught.value.details[0]["loc"] == loc


def test_a_stored_spec_this_version_refuses_is_one_spec_error_naming_the_job() -> None:
    job_id = uuid.uuid4()
    assert load_stored_spec(MLP, job_id=job_id).train.epochs == 2
    with pytest.raises(SpecError) as caught:
        load_stored_spec({"model": {"preset": "retired"}}, job_id=job_id, loc="model_job_id")
    assert caught.value.details[0]["loc"] == "model_job_id"
    assert caught.value.message.startswith(f"model_job_id: job {job_id}'s spec no longer")
    assert "model.preset" in caught.value.message
