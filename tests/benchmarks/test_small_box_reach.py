"""The small-box reach benchmark: its grid of boxes, and a reach that finds a trigger's place."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from small_box_reach import grid_boxes, small_box_reach  # noqa: E402

from agnostic_saliency.backdoor.fitting import Pool  # noqa: E402


def test_grid_boxes_cover_the_stride_grid():
    boxes = grid_boxes(8, 8, 2, 3)
    assert boxes.shape == (3 * 3, 8, 8)  # corners at rows and columns 0, 3, 6
    assert torch.all(boxes.flatten(1).sum(1) == 4)
    assert boxes[0, :2, :2].sum() == 4 and boxes[-1, 6:, 6:].sum() == 4


class BottomRight(nn.Module):
    """Class 1 when the bottom-right 2x2 block is bright, else class 0."""

    def forward(self, x):
        bright = x[:, 0, 6:, 6:].mean((1, 2))
        return torch.stack([0.5 - bright, bright - 0.5], 1) * 10


def test_reach_finds_the_one_place_that_works():
    samples = torch.rand(40, 1, 8, 8) * 0.3
    everywhere = torch.ones(40, 2, dtype=torch.bool)
    pool = Pool(samples[:24], samples[24:], None, None, everywhere[:24], everywhere[24:], None)
    boxes = grid_boxes(8, 8, 2, 2)
    reach, best = small_box_reach(BottomRight(), pool, 1, boxes, 0.0, 1.0, steps=30, seed=0)
    assert reach == 1.0 and boxes[best, 6:, 6:].sum() == 4  # only the bottom-right box flips them
    assert small_box_reach(BottomRight(), pool, 0, boxes, 0.0, 1.0, steps=5, seed=0)[0] == 0.0  # nothing to flip
