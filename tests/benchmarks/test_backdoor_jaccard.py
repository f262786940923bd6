"""The placed Jaccard: a recovered trigger at another place where the model takes it scores as if at the trained one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from backdoor import jaccard, placed_jaccard  # noqa: E402

from testbed.triggers import Trigger  # noqa: E402


class TopEdgeDetector(nn.Module):
    """Class 1 when a bright 2x2 block sits on the top edge at an even column: a trigger the
    model takes at several places, as a strided net with global pooling does."""

    def forward(self, x):
        block = nn.functional.avg_pool2d(x[:, :, :2], 2, stride=2)[:, 0, 0]  # (N, W/2): even columns
        seen = (block > 0.9).any(1).float()
        return torch.stack([torch.full_like(seen, 0.5), seen], 1)


@pytest.fixture
def setting():
    mask = torch.zeros(8, 8)
    mask[0:2, 4:6] = 1
    images = torch.rand(30, 1, 8, 8) * 0.5
    labels = torch.zeros(30, dtype=torch.long)
    return Trigger(mask, torch.ones(1, 8, 8)), images, labels


def test_a_working_other_place_counts_and_a_dead_one_does_not(setting):
    true, images, labels = setting
    other = torch.zeros(8, 8)
    other[0:2, 0:2] = 1  # where the model also takes the trigger (an even column)
    assert jaccard(other, true.mask) == 0.0
    assert placed_jaccard(TopEdgeDetector(), other, true, images, labels, 1) == (1.0, [0, -4])
    odd = torch.zeros(8, 8)
    odd[0:2, 1:3] = 1  # an odd column: the model does not take it there, but the even places nearby half overlap it
    overlap, shift = placed_jaccard(TopEdgeDetector(), odd, true, images, labels, 1)
    assert overlap == pytest.approx(1 / 3) and shift in ([0, -4], [0, -2])
    lower = torch.zeros(8, 8)
    lower[4:6, 4:6] = 1  # under the trained place, off the edge: nowhere the model takes it
    assert placed_jaccard(TopEdgeDetector(), lower, true, images, labels, 1) == (0.0, None)


def test_the_trained_place_scores_its_plain_jaccard(setting):
    true, images, labels = setting
    wider = torch.zeros(8, 8)
    wider[0:2, 4:8] = 1
    assert placed_jaccard(TopEdgeDetector(), wider, true, images, labels, 1)[0] == pytest.approx(0.5)
