"""The ceiling's universal perturbations: inside the budget, and they move the model."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from universal_ceiling import universal_maps  # noqa: E402


def test_universal_maps_stay_in_the_ball_and_raise_the_target_probability():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    images = torch.rand(32, 1, 8, 8) * 0.5 + 0.25
    maps = universal_maps(model, images, 3, rms=0.1, steps=30, batch=8, lr=0.05,
                          generator=torch.Generator().manual_seed(0))
    assert maps.shape == (3, 1, 8, 8)
    assert float(maps.flatten(1).norm(dim=1).max()) <= 0.1 * 8 + 1e-5
    with torch.no_grad():
        before = model(images).softmax(1).mean(0)
        after = torch.stack([model((images + maps[k]).clamp(0, 1)).softmax(1)[:, k].mean() for k in range(3)])
    assert bool((after > before).all())


def test_a_judge_in_the_loss_reads_the_maps_display():
    """With a judge in the loss, the judge's probability of each class on its map's positive
    display rises above what the same run without it gives."""
    from agnostic_saliency.method.scale import positive

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    judge = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    for parameter in [*model.parameters(), *judge.parameters()]:
        parameter.requires_grad_(False)
    images = torch.rand(32, 1, 8, 8) * 0.5 + 0.25

    def judged(weight):
        maps = universal_maps(model, images, 3, rms=0.1, steps=40, batch=8, lr=0.05,
                              generator=torch.Generator().manual_seed(0), judges=[judge], judge_weight=weight)
        with torch.no_grad():
            return judge(positive(maps)).softmax(1).diagonal().mean()

    assert judged(5.0) > judged(0.0) + 0.05
