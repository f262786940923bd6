"""Refinement: a clearer picture without losing model fidelity.

The refinement blurs the finished map with a Gaussian of ``sigma`` pixels and continues nudging
from there with every gradient low-pass filtered the same way, so that isolated high-frequency
pixels, which carry little of the concept, fade while shapes stay and fidelity is rebuilt. The engine re-measures fidelity afterwards
and keeps the refined map only where its fooling rate dropped by no more than the tolerance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ceil(2.5 sigma)."""
    radius = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (K, C, H, W) maps, reflecting at the borders."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma, maps.device, maps.dtype)
    radius = (len(kernel) - 1) // 2
    k, c, h, w = maps.shape
    flat = maps.reshape(k * c, 1, h, w)
    mode = "reflect" if radius < min(h, w) else "replicate"
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1))
    return flat.reshape(k, c, h, w)


def accept_refinement(before: list[float], after: list[float], tolerance: float) -> list[bool]:
    """Per map: keep the refined map when its fooling rate fell by at most ``tolerance``."""
    return [a >= b - tolerance for b, a in zip(before, after)]
