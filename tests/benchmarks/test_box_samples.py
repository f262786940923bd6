"""The box-samples benchmark's pieces: which samples count for a class, and the true trigger's share."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from box_samples import elsewhere, true_trigger_shares  # noqa: E402

from agnostic_saliency.backdoor.pool import far_samples  # noqa: E402


def test_elsewhere_keeps_exactly_the_samples_on_other_classes():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    counted = far_samples(elsewhere(probabilities), 0.0)
    # sample n counts for class k when the model puts it in another class
    assert counted.tolist() == [[False, True, True], [True, False, True], [False, True, True], [True, True, False]]


class Corner(nn.Module):
    """Class 1 when the top-left pixel is bright, else class 0."""

    def forward(self, x):
        bright = x[:, 0, 0, 0]
        return torch.stack([0.5 - bright, bright - 0.5], 1)


def test_true_trigger_shares_leave_out_samples_already_on_the_target():
    mask = torch.zeros(4, 4)
    mask[0, 0] = 1
    pattern = torch.ones(1, 4, 4)
    dark = torch.zeros(6, 1, 4, 4)
    on_target = torch.ones(2, 1, 4, 4)
    shares = true_trigger_shares(Corner(), mask, pattern, 1, dark, torch.cat([dark, on_target]), on_target)
    assert shares["far"] == 1.0 and shares["held_out"] == 1.0  # every dark sample flips
    assert shares["raw"] is None  # nothing left once the samples already on the target are out
    weak = true_trigger_shares(Corner(), mask, torch.full((1, 4, 4), 0.2), 1, dark, dark, dark)
    assert weak == {"far": 0.0, "held_out": 0.0, "raw": 0.0}
