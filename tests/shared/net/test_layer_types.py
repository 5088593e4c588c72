"""Spec v1.1 layers: the new built-ins, Bilinear, Residual blocks, token inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.net.build import build_model
from shared.net.dryrun import dry_run
from shared.net.layers import LAYERS, Residual
from shared.spec import sample_shape
from tests.support.layer_specs import SYNTHETIC_10, job, linear, spec_error

DIGITS = {"dataset": "digits"}
TOKENS = {
    "dataset": "synthetic",
    "input_shape": [6],
    "input_kind": "tokens",
    "vocab_size": 20,
    "num_classes": 3,
}


def conv(i: int, o: int, k: int, name: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"type": "Conv2d", "in_channels": i, "out_channels": o, "kernel_size": k, **kw} | (
        {"name": name} if name else {}
    )


def bn(n: int) -> dict[str, Any]:
    return {"type": "BatchNorm2d", "num_features": n}


FLAT: dict[str, Any] = {"type": "Flatten"}

# (new layer type, layers, data)
NEW_LAYERS: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
    (
        "Bilinear",
        [
            linear(10, 4),
            {"type": "Bilinear", "in1_features": 4, "in2_features": 4, "out_features": 3},
        ],
        SYNTHETIC_10,
    ),
    (
        "Conv3d",
        [
            {"type": "Conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
            FLAT,
            linear(16, 3),
        ],
        {"dataset": "synthetic", "input_shape": [1, 4, 4, 4], "num_classes": 3},
    ),
    (
        "ConvTranspose2d",
        [
            {"type": "ConvTranspose2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
            FLAT,
            linear(200, 10),
        ],
        DIGITS,
    ),
    (
        "MaxPool1d",
        [{"type": "MaxPool1d", "kernel_size": 2}, FLAT, linear(10, 3)],
        {"dataset": "synthetic", "input_shape": [2, 10], "num_classes": 3},
    ),
    (
        "GroupNorm",
        [
            conv(1, 4, 3),
            {"type": "GroupNorm", "num_groups": 2, "num_channels": 4},
            FLAT,
            linear(144, 10),
        ],
        DIGITS,
    ),
    ("Dropout2d", [{"type": "Dropout2d", "p": 0.1}, FLAT, linear(64, 10)], DIGITS),
    (
        "Embedding",
        [{"type": "Embedding", "num_embeddings": 20, "embedding_dim": 4}, FLAT, linear(24, 3)],
        TOKENS,
    ),
    ("SiLU", [linear(10, 3), {"type": "SiLU"}], SYNTHETIC_10),
    ("ELU", [linear(10, 3), {"type": "ELU", "alpha": 0.5}], SYNTHETIC_10),
]


@pytest.mark.parametrize(
    ("type_name", "layers", "data"), NEW_LAYERS, ids=[t for t, _, _ in NEW_LAYERS]
)
def test_each_new_layer_builds_and_dry_runs(
    type_name: str, layers: list[dict[str, Any]], data: dict[str, Any]
) -> None:
    spec = job(layers, data)
    report = dry_run(spec)
    assert type_name in [t for _, t, _ in report.layer_shapes]
    width = report.output_shape[1]

    model = build_model(spec.model)
    sample = (5, *sample_shape(spec.data))
    x = torch.randint(0, 20, sample) if data is TOKENS else torch.randn(sample)
    assert model(x).shape == (5, width)


def test_registry_holds_the_new_types() -> None:
    new = {"Bilinear", "Conv3d", "ConvTranspose2d", "MaxPool1d", "GroupNorm", "Dropout2d"}
    assert new | {"Embedding", "SiLU", "ELU", "Residual", "Sequential"} <= set(LAYERS)
    assert all(issubclass(cls, nn.Module) for cls in LAYERS.values())


# Bilinear


def test_bilinear_is_bilinear_of_x_with_itself_and_keeps_torch_keys() -> None:
    spec = job(
        [
            linear(10, 4),
            {
                "type": "Bilinear",
                "name": "bil",
                "in1_features": 4,
                "in2_features": 4,
                "out_features": 3,
            },
        ]
    )
    bil = build_model(spec.model).get_submodule("bil")
    assert isinstance(bil, nn.Bilinear)
    assert list(bil.state_dict()) == list(nn.Bilinear(4, 4, 3).state_dict()) == ["weight", "bias"]
    h = torch.randn(5, 4)
    torch.testing.assert_close(bil(h), F.bilinear(h, h, bil.weight, bil.bias))
    assert str(bil) == "Bilinear(in1_features=4, in2_features=4, out_features=3, bias=True)"


def test_bilinear_needs_equal_input_sizes() -> None:
    error = spec_error(
        [
            linear(10, 4),
            {"type": "Bilinear", "in1_features": 4, "in2_features": 6, "out_features": 3},
        ]
    )
    assert error.message == (
        "model.layers[1] (Bilinear): in1_features (4) must equal in2_features (6): "
        "in a layer stack both inputs are the previous layer's output"
    )
    assert error.details[0]["loc"] == "model.layers[1].in2_features"


def test_bilinear_input_size_is_checked() -> None:
    error = spec_error(
        [{"type": "Bilinear", "in1_features": 4, "in2_features": 4, "out_features": 3}]
    )
    assert "(Bilinear): expects last dimension 4, got 10" in error.message


# Residual

RESNET: list[dict[str, Any]] = [
    conv(1, 8, 3, "stem", padding=1, bias=False),
    bn(8),
    {"type": "ReLU"},
    {
        "type": "Residual",
        "name": "block1",
        "layers": [
            conv(8, 8, 3, padding=1, bias=False),
            bn(8),
            {"type": "ReLU", "inplace": True},
            conv(8, 8, 3, padding=1, bias=False),
            bn(8),
        ],
    },
    {"type": "ReLU"},
    {
        "type": "Residual",
        "name": "block2",
        "layers": [
            conv(8, 16, 3, stride=2, padding=1, bias=False),
            bn(16),
            {"type": "ReLU"},
            conv(16, 16, 3, padding=1, bias=False),
            bn(16),
        ],
        "shortcut": [conv(8, 16, 1, stride=2, bias=False), bn(16)],
    },
    {"type": "ReLU"},
    {"type": "AdaptiveAvgPool2d", "output_size": 1},
    FLAT,
    linear(16, 10, "fc"),
]


def test_resnet_spec_dry_runs_and_trains() -> None:
    spec = job(RESNET, DIGITS)
    report = dry_run(spec)
    assert ("block1", "Residual", (2, 8, 8, 8)) in report.layer_shapes
    assert ("block2", "Residual", (2, 16, 4, 4)) in report.layer_shapes
    assert report.output_shape == (2, 10)

    torch.manual_seed(0)
    model = build_model(spec.model)
    keys = list(model.state_dict())
    assert "block1.body.0.weight" in keys and "block2.shortcut.0.weight" in keys
    assert "block2.shortcut.1.running_mean" in keys
    block1, block2 = model.get_submodule("block1"), model.get_submodule("block2")
    assert isinstance(block1, Residual) and isinstance(block1.shortcut, nn.Identity)
    assert isinstance(block2, Residual) and isinstance(block2.body, nn.Sequential)
    assert sum(p.numel() for p in model.parameters()) == report.param_count

    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model.get_parameter("block2.shortcut.0.weight").grad is not None


def test_residual_computes_body_plus_shortcut() -> None:
    torch.manual_seed(0)
    model = build_model(job(RESNET, DIGITS).model).eval()
    block1, block2 = model.get_submodule("block1"), model.get_submodule("block2")
    assert isinstance(block1, Residual) and isinstance(block2, Residual)
    h = torch.randn(3, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block1(h), block1.body(h) + h)
        torch.testing.assert_close(block2(h), block2.body(h) + block2.shortcut(h))


def residual(
    body: list[dict[str, Any]], shortcut: list[dict[str, Any]] | None = None, name: str = "block1"
) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "Residual", "name": name, "layers": body}
    if shortcut is not None:
        block["shortcut"] = shortcut
    return block


STEM: list[dict[str, Any]] = [conv(1, 8, 3, padding=1), bn(8), {"type": "ReLU"}]
HEAD: list[dict[str, Any]] = [{"type": "AdaptiveAvgPool2d", "output_size": 1}, FLAT, linear(16, 10)]


def test_identity_shortcut_shape_mismatch_names_the_block() -> None:
    error = spec_error([*STEM, residual([conv(8, 16, 3, padding=1)]), *HEAD], DIGITS)
    assert error.message == (
        "model.layers[3] 'block1' (Residual): body gives (2, 16, 8, 8) but shortcut gives "
        "(2, 8, 8, 8): add a projection shortcut"
    )
    assert error.details[0]["loc"] == "model.layers[3]"


def test_projection_shortcut_shape_mismatch() -> None:
    block = residual([conv(8, 16, 3, padding=1)], [conv(8, 16, 1, stride=2)])
    error = spec_error([*STEM, block, *HEAD], DIGITS)
    assert error.message.startswith(
        "model.layers[3] 'block1' (Residual): body gives (2, 16, 8, 8) but shortcut gives "
        "(2, 16, 4, 4)"
    )


def test_error_paths_inside_body_and_shortcut() -> None:
    body_error = spec_error([*STEM, residual([conv(4, 16, 3, padding=1)]), *HEAD], DIGITS)
    assert body_error.message.startswith("model.layers[3].layers[0] (Conv2d): expects 4 input")
    assert body_error.details[0]["loc"] == "model.layers[3].layers[0]"

    block = residual([conv(8, 16, 3, padding=1)], [bn(8), conv(4, 16, 1, "proj")])
    short_error = spec_error([*STEM, block, *HEAD], DIGITS)
    assert short_error.message.startswith("model.layers[3].shortcut[1] 'proj' (Conv2d): expects 4")
    assert short_error.details[0]["loc"] == "model.layers[3].shortcut[1]"

    missing = spec_error(
        [*STEM, residual([bn(8)], [{"type": "Conv2d", "in_channels": 8}]), *HEAD], DIGITS
    )
    assert missing.details[0]["loc"] == "model.layers[3].shortcut[0].out_channels"


def test_nested_residual_paths_and_keys() -> None:
    inner = residual([linear(8, 8, "fc")], name="inner")
    outer = residual([{"type": "Sequential", "name": "seq", "layers": [inner]}], name="outer")
    spec = job([linear(10, 8), outer, linear(8, 3)])
    assert dry_run(spec).output_shape == (2, 3)
    keys = list(build_model(spec.model).state_dict())
    assert "outer.body.seq.inner.body.fc.weight" in keys

    bad = residual([{"type": "Sequential", "layers": [residual([linear(7, 8, "fc")])]}], name="o")
    error = spec_error([linear(10, 8), bad, linear(8, 3)])
    assert error.message.startswith("model.layers[1].layers[0].layers[0].layers[0] 'fc' (Linear)")


def test_residual_takes_no_constructor_arguments() -> None:
    error = spec_error([{**residual([linear(10, 10)]), "scale": 2}, linear(10, 3)])
    assert "a Residual takes only 'layers' and 'shortcut'" in error.message
    assert error.details[0]["loc"] == "model.layers[0].scale"


def test_duplicate_name_inside_a_residual_body() -> None:
    error = spec_error([residual([linear(10, 10, "fc"), linear(10, 10, "fc")]), linear(10, 3)])
    assert (
        "model.layers[0].layers[1] 'fc' (Linear): duplicate layer name 'fc' in the same body"
        in (error.message)
    )


def test_in_place_first_layer_of_a_branch_is_refused() -> None:
    block = residual([{"type": "ReLU", "inplace": True}, linear(10, 10)])
    error = spec_error([block, linear(10, 3)])
    assert error.message.startswith("model.layers[0].layers[0] (ReLU): an in-place first layer")
    assert error.details[0]["loc"] == "model.layers[0].layers[0].inplace"


# Token inputs


def test_embedding_first_model_dry_runs_on_int64_ids() -> None:
    layers = [
        {"type": "Embedding", "name": "emb", "num_embeddings": 20, "embedding_dim": 4},
        {"type": "LayerNorm", "normalized_shape": 4},
        FLAT,
        linear(24, 3),
    ]
    report = dry_run(job(layers, TOKENS))
    assert report.layer_shapes[0] == ("emb", "Embedding", (2, 6, 4))
    assert report.param_count == 20 * 4 + 8 + 24 * 3 + 3


def test_embedding_on_float_input_says_what_to_change() -> None:
    error = spec_error([{"type": "Embedding", "num_embeddings": 20, "embedding_dim": 4}])
    assert "expects integer token ids, got floats" in error.message
    assert "data.input_kind 'tokens'" in error.message


def test_token_ids_into_a_linear_layer_say_to_embed_first() -> None:
    error = spec_error([linear(6, 3)], TOKENS)
    assert error.message.startswith("model.layers[0] (Linear): gets integer token ids")
    assert "start the model with an Embedding" in error.message


def test_embedding_smaller_than_the_vocabulary() -> None:
    layers = [{"type": "Embedding", "num_embeddings": 10, "embedding_dim": 4}, FLAT, linear(24, 3)]
    error = spec_error(layers, TOKENS)
    assert "has 10 embeddings but data.vocab_size is 20" in error.message
    assert error.details[0]["loc"] == "model.layers[0].num_embeddings"


def test_embedding_private_and_sparse_arguments_are_refused() -> None:
    emb = {"type": "Embedding", "num_embeddings": 20, "embedding_dim": 4}
    private = spec_error([{**emb, "_weight": [[0.0]]}, FLAT, linear(24, 3)], TOKENS)
    assert "unknown argument '_weight'" in private.message
    sparse = spec_error([{**emb, "sparse": True}, FLAT, linear(24, 3)], TOKENS)
    assert sparse.details[0]["loc"] == "model.layers[0].sparse"
