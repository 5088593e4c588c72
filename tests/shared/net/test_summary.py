"""model_summary (POST /api/v1/models/summary) and CheckedSpec.state_shapes (init_from checks)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from shared.errors import SpecError
from shared.net.build import build_model
from shared.net.dryrun import checked_model, dry_run, estimate_train_bytes
from shared.net.summary import ModelSummary, model_summary
from shared.spec import JobSpec
from shared.spec_check import SpecLimits, check_spec

DIGITS = {"dataset": "digits"}


def conv(i: int, o: int, k: int, **kw: Any) -> dict[str, Any]:
    return {"type": "Conv2d", "in_channels": i, "out_channels": o, "kernel_size": k, **kw}


LAYERS: list[dict[str, Any]] = [
    {**conv(1, 4, 3, padding=1), "name": "stem"},
    {"type": "BatchNorm2d", "num_features": 4},
    {
        "type": "Residual",
        "name": "block",
        "layers": [conv(4, 8, 3, padding=1), {"type": "ReLU"}],
        "shortcut": [conv(4, 8, 1)],
    },
    {"type": "AdaptiveAvgPool2d", "output_size": 1},
    {"type": "Flatten"},
    {"type": "Linear", "name": "fc", "in_features": 8, "out_features": 10},
]


def summary_of(spec: JobSpec, max_params: int = 50_000_000) -> ModelSummary:
    """What POST /models/summary answers: the summary of one dry run."""
    return model_summary(spec, *checked_model(spec, max_params))


def job(**model: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"model": {"layers": LAYERS, **model}, "data": DIGITS, "train": {"batch_size": 32}}
    )


def test_module_tree_is_print_model() -> None:
    spec = job()
    assert summary_of(spec).module_tree == str(build_model(spec.model))
    assert "(block): Residual(\n    (body): Sequential(" in summary_of(spec).module_tree


def test_parameters_table_matches_named_parameters_and_freezing() -> None:
    spec = job(freeze=["stem.*", "block.shortcut.*"])
    summary = summary_of(spec)
    model = build_model(spec.model)
    assert [(p.name, p.shape, p.numel, p.trainable) for p in summary.parameters] == [
        (name, list(param.shape), param.numel(), param.requires_grad)
        for name, param in model.named_parameters()
    ]
    frozen = {p.name for p in summary.parameters if not p.trainable}
    assert frozen == {
        "stem.weight",
        "stem.bias",
        "block.shortcut.0.weight",
        "block.shortcut.0.bias",
    }
    assert summary.frozen_count == 4 * 9 + 4 + 4 * 8 + 8
    assert summary.trainable_count + summary.frozen_count == summary.param_count


def test_sizes_match_the_dry_run() -> None:
    spec = job()
    summary, report = summary_of(spec), dry_run(spec)
    assert summary.param_count == report.param_count
    assert summary.estimated_train_bytes == estimate_train_bytes(report, batch_size=32)
    assert summary.output_shape == ["batch", 10]


def test_layers_in_forward_order_with_batch_shapes() -> None:
    rows = {row.name: row for row in summary_of(job()).layers}
    assert list(rows) == [
        "stem",
        "1",
        "block",
        "block.body",
        "block.body.0",
        "block.body.1",
        "block.shortcut",
        "block.shortcut.0",
        "3",
        "4",
        "fc",
    ]
    assert rows["stem"].type == "Conv2d" and rows["stem"].output_shape == ["batch", 4, 8, 8]
    assert rows["block"].type == "Residual" and rows["block"].output_shape == ["batch", 8, 8, 8]
    assert rows["block"].param_count == (4 * 8 * 9 + 8) + (4 * 8 + 8)
    assert rows["block.body.1"].param_count == 0
    assert rows["fc"].output_shape == ["batch", 10]


def test_to_json_is_plain_json() -> None:
    data = summary_of(job(freeze=["fc.*"])).to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {
        "module_tree",
        "layers",
        "parameters",
        "param_count",
        "trainable_count",
        "frozen_count",
        "estimated_train_bytes",
        "output_shape",
    }
    assert data["parameters"][-1] == {
        "name": "fc.bias",
        "shape": [10],
        "numel": 10,
        "trainable": False,
    }
    assert data["layers"][0] == {
        "name": "stem",
        "type": "Conv2d",
        "output_shape": ["batch", 4, 8, 8],
        "param_count": 40,
    }


def test_summary_errors_are_the_dry_runs() -> None:
    with pytest.raises(SpecError, match="at most 10 are allowed"):
        summary_of(job(), max_params=10)


def test_summary_of_a_token_model() -> None:
    spec = JobSpec.model_validate(
        {
            "model": {
                "layers": [
                    {"type": "Embedding", "num_embeddings": 50, "embedding_dim": 8},
                    {"type": "Flatten"},
                    {"type": "Linear", "in_features": 32, "out_features": 2},
                ]
            },
            "data": {
                "dataset": "synthetic",
                "input_kind": "tokens",
                "input_shape": [4],
                "vocab_size": 50,
                "num_classes": 2,
            },
        }
    )
    assert summary_of(spec).layers[0].output_shape == ["batch", 4, 8]


def test_state_shapes_match_a_real_build() -> None:
    spec = job()
    shapes = check_spec(spec).state_shapes()
    real = build_model(spec.model).state_dict()
    assert shapes == {key: tuple(value.shape) for key, value in real.items()}
    assert shapes["1.running_mean"] == (4,) and shapes["1.num_batches_tracked"] == ()
    assert shapes["block.shortcut.0.weight"] == (8, 4, 1, 1)


def test_state_shapes_allocate_nothing() -> None:
    wide = {"type": "Linear", "in_features": 10, "out_features": 10**8}
    head = {"type": "Linear", "in_features": 10**8, "out_features": 3}
    big = JobSpec.model_validate(
        {
            "model": {"layers": [wide, head]},
            "data": {"dataset": "synthetic", "input_shape": [10], "num_classes": 3},
        }
    )
    checked = check_spec(big, limits=SpecLimits(max_params=10**10))
    assert checked.state_shapes()["0.weight"] == (10**8, 10)
    assert torch.get_default_device().type == "cpu"
