"""Scaling a signed map for display.

``positive`` (the default display) shows what the map draws on the darkest input, clip(low +
map), stretched so that its brightest pixel is the top of the range: the picture the model itself
reads on the dark end of the sample distribution. ``minmax`` stretches each signed map to the full
pixel range, zero at some grey; ``signed`` keeps zero at mid-grey, for a diverging view of where
the map adds and removes intensity.

On fmnist-cnn (seed 0, 200 + 60 steps) an adversarially trained judge read 1 of the 10 min-max
pictures as their class and 6 of the 10 positive ones; the maps themselves are the same
(docs/readable_maps.md).
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


def positive(maps: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Each map's positive part (what it adds to the darkest input) divided by its largest value,
    in [low, high]; a map with no positive part is all ``low``."""
    part = maps.clamp_min(0)
    peak = part.flatten(1).max(1).values.clamp_min(1e-12).view(-1, *([1] * (maps.dim() - 1)))
    return low + (high - low) * part / peak


SCALINGS = {"positive": positive, "minmax": minmax, "signed": signed}
DEFAULT_SCALING = "positive"
