"""ModelSpec.init rules and ModelSpec.freeze globs, as build_model and dry_run apply them."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from shared.errors import SpecError
from shared.net.build import build_model
from shared.net.dryrun import dry_run
from shared.spec import JobSpec

DATA = {"dataset": "synthetic", "input_shape": [10], "num_classes": 3}
LAYERS = [
    {"type": "Linear", "name": "fc", "in_features": 10, "out_features": 6},
    {"type": "ReLU"},
    {"type": "Linear", "name": "out", "in_features": 6, "out_features": 3},
]


def job(**model: Any) -> JobSpec:
    return JobSpec.model_validate({"model": {"layers": LAYERS, **model}, "data": DATA})


def param(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(name)


def built(seed: int = 0, **model: Any) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model(job(**model).model)


# (rule's extra fields, the torch.nn.init call it must equal)
SCHEMES: dict[str, tuple[dict[str, Any], Any]] = {
    "xavier_uniform": ({"gain": 2.0}, lambda t: nn.init.xavier_uniform_(t, gain=2.0)),
    "xavier_normal": ({"gain": 0.5}, lambda t: nn.init.xavier_normal_(t, gain=0.5)),
    "kaiming_uniform": (
        {"a": 0.1, "mode": "fan_out", "nonlinearity": "leaky_relu"},
        lambda t: nn.init.kaiming_uniform_(t, a=0.1, mode="fan_out", nonlinearity="leaky_relu"),
    ),
    "kaiming_normal": ({}, lambda t: nn.init.kaiming_normal_(t, nonlinearity="relu")),
    "orthogonal": ({"gain": 1.5}, lambda t: nn.init.orthogonal_(t, gain=1.5)),
    "normal": ({"mean": 1.0, "std": 0.2}, lambda t: nn.init.normal_(t, mean=1.0, std=0.2)),
    "uniform": ({"low": -2.0, "high": 3.0}, lambda t: nn.init.uniform_(t, a=-2.0, b=3.0)),
    "zeros": ({}, nn.init.zeros_),
    "ones": ({}, nn.init.ones_),
    "constant": ({"value": 0.25}, lambda t: nn.init.constant_(t, 0.25)),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_each_scheme_matches_torch_nn_init_under_the_same_seed(scheme: str) -> None:
    extra, reference = SCHEMES[scheme]
    model = built(init=[{"params": "*.weight", "scheme": scheme, **extra}])

    torch.manual_seed(0)  # same seed, same construction, then torch's own calls in order
    expected = build_model(job().model)
    reference(param(expected, "fc.weight"))
    reference(param(expected, "out.weight"))

    assert torch.equal(param(model, "fc.weight"), param(expected, "fc.weight"))
    assert torch.equal(param(model, "out.weight"), param(expected, "out.weight"))
    assert torch.equal(param(model, "fc.bias"), param(expected, "fc.bias"))  # rule skips it


def test_init_is_deterministic_under_the_seed() -> None:
    rules = [{"params": "fc.weight", "scheme": "orthogonal"}]
    assert torch.equal(
        param(built(7, init=rules), "fc.weight"),
        param(built(7, init=rules), "fc.weight"),
    )
    assert not torch.equal(
        param(built(7, init=rules), "fc.weight"),
        param(built(8, init=rules), "fc.weight"),
    )


def test_rules_apply_in_order_and_the_later_one_wins() -> None:
    rules = [{"params": "*.weight", "scheme": "ones"}, {"params": "fc.*", "scheme": "zeros"}]
    model = built(init=rules)
    assert (
        torch.count_nonzero(param(model, "fc.weight")) == 0
        and torch.count_nonzero(param(model, "fc.bias")) == 0
    )
    assert torch.all(param(model, "out.weight") == 1)

    model = built(init=list(reversed(rules)))
    assert (
        torch.all(param(model, "fc.weight") == 1)
        and torch.count_nonzero(param(model, "fc.bias")) == 0
    )


def test_a_rule_matching_nothing_names_its_params() -> None:
    rules = [
        {"params": "fc.weight", "scheme": "zeros"},
        {"params": "conv*.weight", "scheme": "ones"},
    ]
    for run in (lambda: dry_run(job(init=rules)), lambda: built(init=rules)):
        with pytest.raises(SpecError) as info:
            run()
        assert info.value.message.startswith(
            "model.init[1]: params 'conv*.weight' matches no parameter of the model; "
            "its parameters: fc.weight, fc.bias, out.weight, out.bias"
        )
        assert info.value.details[0]["loc"] == "model.init[1].params"


@pytest.mark.parametrize("scheme", ["xavier_uniform", "kaiming_normal", "orthogonal"])
def test_a_matrix_scheme_on_a_bias_names_rule_and_parameter(scheme: str) -> None:
    with pytest.raises(SpecError) as info:
        dry_run(job(init=[{"params": "fc.*", "scheme": scheme}]))
    assert info.value.message.startswith(
        f"model.init[0]: {scheme} cannot initialise 'fc.bias' of shape (6,): "
        "it needs a tensor of 2 or more dimensions"
    )
    assert info.value.details[0]["loc"] == "model.init[0].scheme"


def test_init_on_a_preset_and_a_conv_weight() -> None:
    spec = JobSpec.model_validate(
        {
            "model": {
                "preset": "lenet",
                "init": [
                    {"params": "conv*.weight", "scheme": "kaiming_normal", "mode": "fan_out"},
                    {"params": "*.bias", "scheme": "zeros"},
                ],
            },
            "data": {"dataset": "fake", "input_shape": [1, 32, 32]},
        }
    )
    dry_run(spec)
    model = build_model(spec.model)
    assert all(torch.count_nonzero(b) == 0 for n, b in model.named_parameters() if "bias" in n)


def test_build_on_meta_checks_rules_without_values() -> None:
    with torch.device("meta"):
        model = build_model(job(init=[{"params": "*.weight", "scheme": "orthogonal"}]).model)
    assert param(model, "fc.weight").is_meta


# Freezing


def test_freeze_turns_off_requires_grad_and_counts() -> None:
    model = built(freeze=["fc.*"])
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    assert flags == {"fc.weight": False, "fc.bias": False, "out.weight": True, "out.bias": True}

    report = dry_run(job(freeze=["fc.*"]))
    assert report.param_count == 66 + 21
    assert report.trainable_count == 21
    assert report.frozen_count == 66


def test_no_freeze_means_nothing_frozen() -> None:
    report = dry_run(job())
    assert report.trainable_count == report.param_count == 87 and report.frozen_count == 0


def test_freeze_pattern_matching_nothing() -> None:
    with pytest.raises(SpecError) as info:
        dry_run(job(freeze=["fc.weight", "head.*"]))
    assert info.value.message.startswith(
        "model.freeze[1]: 'head.*' matches no parameter of the model; its parameters: fc.weight"
    )
    assert info.value.details[0]["loc"] == "model.freeze[1]"


def test_freezing_everything_is_refused() -> None:
    for freeze in (["*"], ["fc.*", "out.*"]):
        with pytest.raises(SpecError, match="nothing left to train") as info:
            dry_run(job(freeze=freeze))
        assert info.value.details[0]["loc"] == "model.freeze"


def test_frozen_parameters_get_no_gradient() -> None:
    model = built(freeze=["out.weight"])
    model(torch.randn(4, 10)).sum().backward()
    assert param(model, "out.weight").grad is None and param(model, "out.bias").grad is not None
