"""Small hand-made models whose answers a test can predict, shared by the scan's tests."""

import torch


class ByBrightness(torch.nn.Module):
    """Answers class 0 for dark and class 1 for bright samples, as a noise-loving model would."""

    def forward(self, x):
        mean = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([0.5 - mean, mean - 0.5, torch.full_like(mean, -1.0)], 1) * 20


class CornerReader(torch.nn.Module):
    """Class 1 when the 4x4 top-left corner is bright on average, else class 0."""

    def forward(self, x):
        corner = x[:, 0, :4, :4].mean((1, 2))
        return torch.stack([0.5 - corner, corner - 0.5], 1) * 50


class BrightnessReader(torch.nn.Module):
    """Class 1 once the image's mean brightness passes 0.5."""

    def forward(self, x):
        mean = x.flatten(1).mean(1)
        return torch.stack([0.5 - mean, mean - 0.5], 1) * 50
