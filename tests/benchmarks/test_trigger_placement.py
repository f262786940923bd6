"""Trigger placement: a location-blind model flips everywhere, a location-bound one at its place."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from trigger_placement import placement_success  # noqa: E402


class Detector(nn.Module):
    """Class 1 when a bright 2x2 block is seen (anywhere, or only at the top-left corner)."""

    def __init__(self, anywhere: bool):
        super().__init__()
        self.anywhere = anywhere

    def forward(self, x):
        block = nn.functional.avg_pool2d(x, 2, stride=1)[:, 0]  # (N, H-1, W-1)
        seen = block.flatten(1).amax(1) if self.anywhere else block[:, 0, 0]
        return torch.stack([torch.full_like(seen, 0.9), seen], 1)


def test_placements():
    mask = torch.zeros(8, 8)
    mask[0:2, 0:2] = 1
    pattern = torch.ones(1, 8, 8)
    images = torch.rand(20, 1, 8, 8) * 0.5
    labels = torch.zeros(20, dtype=torch.long)
    blind = placement_success(Detector(anywhere=True), mask, pattern, images, labels, target=1)
    bound = placement_success(Detector(anywhere=False), mask, pattern, images, labels, target=1)
    assert len(blind) == len(bound) == 7 * 7  # every offset that keeps the 2x2 inside 8x8
    assert min(blind.values()) == 1.0
    assert bound[(0, 0)] == 1.0 and sum(bound.values()) == 1.0
