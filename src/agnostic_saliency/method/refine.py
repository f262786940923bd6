"""Refinement: a clearer picture without losing model fidelity.

Two modes, both followed by a fidelity re-measurement in the engine, which keeps the refined map
only where its fooling rate dropped by no more than the tolerance:

- ``shape`` (default): split the map into its Gaussian low-pass *shape* and the *detail* left
  over; scale the shape to a fixed share of the l2 budget and re-nudge only the detail inside
  the rest of it. What a judge recognises is the low-frequency shape, and what fools the model
  is largely high-frequency detail, so fixing the shape's share keeps the displayed picture
  dominated by the shape while the detail restores fidelity. On fmnist-cnn it raised the ordinary
  judge's reading from 6 to 8 of 10 (earlier defaults; an ordinary judge's reading is
  not evidence a person can read the map) and, at the current defaults (200 + 60 steps), the
  robust judge's from 6 to 7 at seed 0, unchanged at seeds 1 and 2 (docs/design.md,
  docs/readable_maps.md).
- ``blur``: blur the whole map by ``sigma`` pixels and continue nudging it with every gradient
  blurred the same way.
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


def split_shape(maps: torch.Tensor, sigma: float, radius: float, share: float) -> tuple[torch.Tensor, float]:
    """The maps' low-pass shape scaled to ``share`` of an l2 ``radius``, and the radius left for
    the detail (so that shape + detail stays inside the ball)."""
    shape = gaussian_blur(maps, sigma)
    norms = shape.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (maps.dim() - 1)))
    return shape * (share * radius / norms), radius * math.sqrt(max(0.0, 1 - share**2))
