"""The adversarial training's attack: inside the ball, in range, and worse for the model."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from train_judges import pgd_l2  # noqa: E402


def test_pgd_l2_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    x = torch.rand(16, 1, 8, 8) * 0.5 + 0.25
    y = torch.randint(0, 3, (16,))
    adversarial = pgd_l2(model, x, y, eps=1.0, steps=5, generator=torch.Generator().manual_seed(0))
    assert (adversarial - x).flatten(1).norm(dim=1).max() <= 1.0 + 1e-5
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        clean = nn.functional.cross_entropy(model(x), y)
        attacked = nn.functional.cross_entropy(model(adversarial), y)
    assert attacked > clean + 0.1
