"""Shared fixtures: tiny models and input specs, so that every test runs in well under a second
or two on one CPU thread."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

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


# A user's own model file, as `file.py:factory` specs load it: a 3-class net on 1x12x12 inputs
# that declares its input shape and class names, plus factories that fail in every way.
USER_MODEL_SOURCE = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        input_shape = (1, 12, 12)
        class_names = ["a", "b", "c"]

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 10 * 10, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))


    def build():
        return Net()


    def spatial():
        return nn.Conv2d(1, 3, 3)


    def not_a_module():
        return 42


    def broken():
        raise RuntimeError("factory exploded")


    NOT_CALLABLE = 3
""")


@pytest.fixture
def user_model_file(tmp_path) -> Path:
    path = tmp_path / "user_model.py"
    path.write_text(USER_MODEL_SOURCE)
    return path


# The slowest tests first (full scans, Ray, inductor compiling C++), so that the two xdist workers
# finish together instead of one waiting on a long test collected last (longest-processing-time-first).
SLOW_FIRST = ("test_scan_flags_a_blend_target", "test_mixed_precision_scan", "test_scan_flags_the_patch_target",
              "test_a_second_draw", "test_scan_cli_takes_its_draws", "test_distributed.py", "test_population.py",
              "test_compiled_and_plain_runs_give_the_same_maps")


def pytest_collection_modifyitems(items):
    def rank(item):
        return next((i for i, key in enumerate(SLOW_FIRST) if key in item.nodeid), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order
