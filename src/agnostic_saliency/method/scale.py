"""Scaling a signed map for display.

``minmax`` stretches each map to the full pixel range: the picture the PNGs show and the one
the model and an independent judge are asked to read. ``signed`` keeps zero at mid-grey, for a
diverging view of where the map adds and removes intensity.
"""

from __future__ import annotations

import torch


def minmax(maps: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Each map stretched to [low, high]; a constant map becomes mid-range."""
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, *([1] * (maps.dim() - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (maps.dim() - 1)))
    width = hi - lo
    unit = torch.where(width > 0, (maps - lo) / width.clamp_min(1e-12), torch.full_like(maps, 0.5))
    return low + (high - low) * unit


def signed(maps: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Each map divided by its largest magnitude, zero at the middle of [low, high]."""
    peak = maps.flatten(1).abs().max(1).values.clamp_min(1e-12).view(-1, *([1] * (maps.dim() - 1)))
    return low + (high - low) * (0.5 + 0.5 * maps / peak)


SCALINGS = {"minmax": minmax, "signed": signed}
