"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.support.fixture_types import TinyModel


@pytest.fixture()
def tiny_model() -> TinyModel:
    """A factory of Linear(4, 3) -> ReLU -> Linear(3, 2), the same weights every time."""

    def make(inplace: bool) -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 3), nn.ReLU(inplace=inplace), nn.Linear(3, 2))

    return make
