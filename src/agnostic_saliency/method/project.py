"""Projection of each map onto a norm ball: the budget.

The budget is a *fraction of the pixel range* so that it means the same for 28x28 grey and
224x224 colour inputs: for ``l2`` it is the map's root-mean-square value (radius =
budget * span * sqrt(C*H*W)); for ``linf`` it is the largest absolute pixel value.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

NORMS = ("l2", "linf")


def budget_radius(norm: str, budget: float, span: float, numel: int) -> float:
    """The ball's radius in pixel units for a budget given as a fraction of the range."""
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; use l2 or linf")
    if not budget > 0:
        raise InputError(f"the budget must be positive, got {budget}")
    return budget * span * (math.sqrt(numel) if norm == "l2" else 1.0)


def project(maps: torch.Tensor, norm: str, radius: float) -> torch.Tensor:
    """Each map (first dimension) projected onto the ``norm`` ball of ``radius``."""
    if norm == "linf":
        return maps.clamp(-radius, radius)
    if norm == "l2":
        norms = maps.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (radius / norms).clamp(max=1.0)
        return maps * factor.view(-1, *([1] * (maps.dim() - 1)))
    raise InputError(f"unknown norm {norm!r}; use l2 or linf")


def rms(maps: torch.Tensor) -> torch.Tensor:
    """Root-mean-square value of each map."""
    return maps.flatten(1).pow(2).mean(1).sqrt()
