"""The presets reproduce the seed notes' models: same state_dict, same outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import SpecError
from shared.net.build import build_model
from shared.net.dryrun import dry_run
from shared.net.presets import PRESETS, preset_input_shape, preset_layers
from shared.spec import JobSpec, ModelSpec

# --- The four seed classes, as written in shared/seed/torch-nn-notes.md ---------------


class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()  # noqa: UP008 - as in the seed
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


class TinyModel(torch.nn.Module):
    def __init__(self):
        super(TinyModel, self).__init__()  # noqa: UP008 - as in the seed
        self.linear1 = torch.nn.Linear(100, 200)
        self.activation = torch.nn.ReLU()
        self.linear2 = torch.nn.Linear(200, 10)
        self.softmax = torch.nn.Softmax()

    def forward(self, x):
        x = self.linear1(x)
        x = self.activation(x)
        x = self.linear2(x)
        x = self.softmax(x)
        return x


class MyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 5)
        self.fc2 = nn.Linear(5, 1)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = self.fc2(x)
        return x


SEEDS: dict[str, type[nn.Module]] = {
    "neural_network": NeuralNetwork,
    "lenet": Net,
    "tiny_model": TinyModel,
    "my_model": MyModel,
}


def test_every_preset_has_a_seed_class() -> None:
    assert set(PRESETS) == set(SEEDS)


# The seed's TinyModel uses Softmax() without dim; torch warns and picks dim=1.
@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_preset_matches_seed_class(name: str) -> None:
    seed = SEEDS[name]().eval()
    built = build_model(ModelSpec.model_validate({"preset": name})).eval()

    seed_state, built_state = seed.state_dict(), built.state_dict()
    assert list(built_state) == list(seed_state)
    assert {k: v.shape for k, v in built_state.items()} == {
        k: v.shape for k, v in seed_state.items()
    }

    built.load_state_dict(seed_state, strict=True)
    x = torch.randn(3, *preset_input_shape(name))
    with torch.no_grad():
        torch.testing.assert_close(built(x), seed(x), rtol=0, atol=0)


def test_same_seed_gives_the_seed_class_weights() -> None:
    # Layers are created in the seed's order, so the global RNG yields the same init.
    torch.manual_seed(7)
    seed = Net()
    torch.manual_seed(7)
    built = build_model(ModelSpec(preset="lenet"))
    for (key, a), b in zip(seed.state_dict().items(), built.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_preset_layers_are_copies() -> None:
    layers = preset_layers("my_model")
    layers[0].name = "changed"
    assert preset_layers("my_model")[0].name == "fc1"


def test_unknown_preset_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="unknown preset 'vgg'"):
        preset_layers("vgg")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("neural_network", {"dataset": "digits", "image_size": 28}),
        ("lenet", {"dataset": "digits", "image_size": 32}),
        ("tiny_model", {"dataset": "synthetic", "input_shape": [100]}),
        ("my_model", {"dataset": "synthetic", "input_shape": [10], "task": "regression"}),
    ],
)
def test_presets_pass_the_dry_run(name: str, data: dict[str, object]) -> None:
    loss = "MSELoss" if data.get("task") == "regression" else "CrossEntropyLoss"
    spec = JobSpec.model_validate(
        {"model": {"preset": name}, "data": data, "train": {"loss": loss}}
    )
    report = dry_run(spec)
    expected = sum(p.numel() for p in SEEDS[name]().parameters())
    assert report.param_count == report.trainable_count == expected
    assert report.output_shape[0] == 2


def test_lenet_on_small_images_names_the_preset_layer() -> None:
    spec = JobSpec.model_validate(
        {"model": {"preset": "lenet"}, "data": {"dataset": "digits", "image_size": 28}}
    )
    with pytest.raises(SpecError) as info:
        dry_run(spec)
    assert info.value.message.startswith("model.preset 'lenet' layer 'fc1' (Linear)")
    assert "expects last dimension 400, got 256" in info.value.message
