"""Shared fixtures: tiny models and input specs, so that every test runs in well under a second
or two on one CPU thread."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from agnostic_saliency.models.spec import InputSpec

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


class TinyConv(nn.Module):
    """Two conv layers and a linear head for (C, 8, 8) inputs."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, side: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1),
        )
        self.head = nn.Linear(4 * side * side, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


@pytest.fixture
def tiny_spec() -> InputSpec:
    return InputSpec((1, 8, 8))


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyConv().eval()


@pytest.fixture
def tiny_conv_class() -> type[nn.Module]:
    """The TinyConv class itself, for tests that build their own instances."""
    return TinyConv
