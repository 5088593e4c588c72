"""build_model and dry_run: good specs build, bad ones are SpecErrors that name the layer."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from shared.errors import SpecError
from shared.net.build import build_model
from shared.net.dryrun import dry_run
from shared.net.layers import LAYERS
from shared.spec import JobSpec, ModelSpec
from tests.support.layer_specs import job, linear, spec_error


def test_custom_cnn_builds_and_reports_shapes() -> None:
    layers = [
        {"type": "Conv2d", "name": "conv", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
        {"type": "BatchNorm2d", "num_features": 4},
        {"type": "LeakyReLU", "negative_slope": 0.1},
        {"type": "AdaptiveAvgPool2d", "output_size": [2, 2]},
        {"type": "Flatten"},
        {"type": "Dropout", "p": 0.2},
        linear(16, 10, "head"),
        {"type": "LogSoftmax", "dim": 1},
    ]
    report = dry_run(job(layers, {"dataset": "digits"}))
    assert report.output_shape == (2, 10)
    assert report.layer_shapes[0] == ("conv", "Conv2d", (2, 4, 6, 6))
    assert report.layer_shapes[4] == ("4", "Flatten", (2, 16))
    assert report.param_count == (4 * 9 + 4) + (4 + 4) + (16 * 10 + 10)

    model = build_model(job(layers, {"dataset": "digits"}).model)
    assert [name for name, _ in model.named_children()][:2] == ["conv", "1"]
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_nested_sequential_names_and_keys() -> None:
    layers = [
        {"type": "Sequential", "name": "body", "layers": [linear(10, 8, "fc"), {"type": "GELU"}]},
        {"type": "Sequential", "layers": [linear(8, 3), {"type": "Identity"}]},
    ]
    model = build_model(job(layers).model)
    assert list(model.state_dict()) == ["body.fc.weight", "body.fc.bias", "1.0.weight", "1.0.bias"]
    assert isinstance(model.body, nn.Sequential)
    report = dry_run(job(layers))
    assert [path for path, _, _ in report.layer_shapes] == ["body.fc", "body.1", "1.0", "1.1"]


def test_every_registered_type_is_a_module_class() -> None:
    assert all(issubclass(cls, nn.Module) for cls in LAYERS.values())
    assert {"Linear", "Conv2d", "Sequential", "LogSoftmax", "Unflatten"} <= set(LAYERS)


def test_unknown_type_lists_the_allowed_ones() -> None:
    error = spec_error([linear(10, 3), {"type": "os.system"}])
    assert error.message.startswith("model.layers[1] (os.system): unknown layer type 'os.system'")
    assert "Conv2d" in error.message and "Linear" in error.message
    assert error.details == [{"loc": "model.layers[1].type", "msg": error.details[0]["msg"]}]


def test_unknown_kwarg_names_layer_and_argument() -> None:
    layers = [linear(10, 8), {"type": "ReLU"}]
    layers.append({"type": "Linear", "name": "fc1", "in_feature": 8, "out_features": 3})
    error = spec_error(layers)
    assert error.message.startswith(
        "model.layers[2] 'fc1' (Linear): unknown argument 'in_feature' "
        "(did you mean 'in_features'?); accepted: in_features, out_features, bias"
    )
    assert error.details[0]["loc"] == "model.layers[2].in_feature"


def test_missing_required_argument() -> None:
    error = spec_error([{"type": "Linear", "in_features": 10}])
    assert "model.layers[0] (Linear): missing required argument 'out_features'" in error.message
    assert error.details[0]["loc"] == "model.layers[0].out_features"


@pytest.mark.parametrize("arg", ["device", "dtype"])
def test_placement_arguments_are_refused(arg: str) -> None:
    error = spec_error([{**linear(10, 3), arg: "cpu"}])
    assert f"argument '{arg}' is not allowed" in error.message


def test_constructor_error_is_a_spec_error() -> None:
    error = spec_error([{"type": "Dropout", "p": 3.0}, linear(10, 3)])
    assert error.message.startswith("model.layers[0] (Dropout): invalid arguments: dropout")


def test_identity_does_not_swallow_typos() -> None:
    error = spec_error([{"type": "Identity", "unused": 1}, linear(10, 3)])
    assert "unknown argument 'unused'" in error.message


def test_wrong_shape_between_layers_names_the_failing_layer() -> None:
    layers = [linear(10, 256), {"type": "ReLU"}, linear(400, 3, "fc1")]
    error = spec_error(layers)
    assert error.message.startswith(
        "model.layers[2] 'fc1' (Linear): expects last dimension 400, got 256"
    )
    assert error.details[0]["loc"] == "model.layers[2]"


def test_shape_error_inside_nested_sequential() -> None:
    layers = [{"type": "Sequential", "layers": [linear(10, 4), linear(5, 3, "inner")]}]
    error = spec_error(layers)
    assert error.message.startswith("model.layers[0].layers[1] 'inner' (Linear): expects last")


def test_torch_shape_errors_are_reworded_with_the_layer() -> None:
    layers = [{"type": "MaxPool2d", "kernel_size": 16}, {"type": "Flatten"}, linear(16, 10)]
    error = spec_error(layers, {"dataset": "digits"})
    assert error.message.startswith("model.layers[0] (MaxPool2d): ")
    assert "(input shape (2, 1, 8, 8))" in error.message


def test_conv_channel_mismatch() -> None:
    conv = {"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}
    error = spec_error([conv], {"dataset": "digits"})
    assert "expects 3 input channels, got 1" in error.message


def test_output_width_must_match_num_classes() -> None:
    error = spec_error([linear(10, 7)])
    assert "CrossEntropyLoss on 3 classes (data.num_classes) needs (batch, 3)" in error.message
    assert error.details[0]["loc"] == "model"


def test_output_width_must_match_regression_targets() -> None:
    data = {"dataset": "synthetic", "input_shape": [10], "task": "regression", "output_dim": 2}
    spec = JobSpec.model_validate(
        {"model": {"layers": [linear(10, 1)]}, "data": data, "train": {"loss": "MSELoss"}}
    )
    with pytest.raises(SpecError, match=r"MSELoss on 2 regression targets .* needs \(batch, 2\)"):
        dry_run(spec)


def test_huge_linear_is_refused_quickly_by_the_parameter_limit() -> None:
    started = time.perf_counter()
    error = spec_error([linear(10, 10**6), linear(10**6, 10**6, "huge"), linear(10**6, 3)])
    assert time.perf_counter() - started < 1.0
    assert "at most 50,000,000 are allowed" in error.message
    assert "largest: model.layers[1] 'huge' (Linear)" in error.message
    assert error.details[0]["loc"] == "model.layers[1]"


def test_parameter_limit_is_configurable() -> None:
    with pytest.raises(SpecError, match="the model has 33 parameters; at most 10"):
        dry_run(job([linear(10, 3)]), max_params=10)


def test_duplicate_names_in_one_container() -> None:
    error = spec_error([linear(10, 5, "fc"), linear(5, 3, "fc")])
    assert error.message.startswith("model.layers[1] 'fc' (Linear): duplicate layer name 'fc'")
    assert error.details[0]["loc"] == "model.layers[1].name"


def test_same_name_in_different_containers_is_fine() -> None:
    layers = [
        {"type": "Sequential", "name": "a", "layers": [linear(10, 5, "fc")]},
        {"type": "Sequential", "name": "b", "layers": [linear(5, 3, "fc")]},
    ]
    assert dry_run(job(layers)).output_shape == (2, 3)


def test_name_clashing_with_module_attribute() -> None:
    error = spec_error([linear(10, 3, "forward")])
    assert "the name 'forward' is taken by an nn.Module attribute" in error.message


def test_sequential_takes_no_kwargs() -> None:
    error = spec_error([{"type": "Sequential", "layers": [linear(10, 3)], "inplace": True}])
    assert "a Sequential takes only 'layers'" in error.message


def test_dry_run_allocates_nothing_real() -> None:
    spec = job([linear(10, 3)])
    dry_run(spec)  # the first meta forward in a process pays a one-off import
    started = time.perf_counter()
    report = dry_run(spec)
    assert time.perf_counter() - started < 0.5
    assert report.param_count == 33


def test_build_model_uses_the_default_device() -> None:
    with torch.device("meta"):
        model = build_model(ModelSpec.model_validate({"layers": [linear(10, 3)]}))
    assert next(model.parameters()).device.type == "meta"
