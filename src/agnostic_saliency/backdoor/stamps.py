"""What every trigger fit and test shares, the scan's and Neural Cleanse's alike: the tanh
parameterisation of a mask and a pattern, the stamp ``(1 - m) * x + m * p``, and the share of
samples a stamp sends to a class (its attack success)."""

from __future__ import annotations

import math

import torch
from torch import nn


def from_tanh(logit: torch.Tensor, low: float = 0.0, high: float = 1.0, epsilon: float = 0.0) -> torch.Tensor:
    """Values in [low, high] from tanh-space logits: ``low + (high - low) * (tanh / (2 - epsilon) + 1/2)``
    (``epsilon`` > 0 is Keras' margin, which Neural Cleanse keeps; the clamp only removes rounding)."""
    unit = (torch.tanh(logit) / (2 - epsilon) + 0.5).clamp(0.0, 1.0)
    return unit if (low, high) == (0.0, 1.0) else low + (high - low) * unit


def to_tanh(
    values: torch.Tensor, low: float = 0.0, high: float = 1.0, epsilon: float = 0.0, margin: float = 0.0
) -> torch.Tensor:
    """The tanh-space logits of ``values`` in [low, high] (the inverse of :func:`from_tanh`), the
    unit values first kept ``margin`` inside [0, 1] so that the logits stay finite."""
    unit = (values - low) / (high - low)
    if margin:
        unit = unit.clamp(margin, 1 - margin)
    return torch.atanh((unit - 0.5) * (2 - epsilon))


def stamp(
    samples: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor, batch_axis: int | None = None
) -> torch.Tensor:
    """``pattern`` stamped on ``samples`` through ``mask``: ``(1 - mask) * samples + mask * pattern``.

    ``batch_axis``: a batched fit's masks and patterns (one per row) lack the samples' batch axis,
    inserted here after the product is taken, so that autograd adds a mask's gradients in one
    order whichever fit calls this (a different graph moved the fitted masks by a float ulp)."""
    if batch_axis is None:
        return (1 - mask) * samples + mask * pattern
    return (1 - mask.unsqueeze(batch_axis)) * samples + (mask * pattern).unsqueeze(batch_axis)


@torch.no_grad()
def stamped_share(
    model: nn.Module, mask: torch.Tensor, pattern: torch.Tensor, samples: torch.Tensor, target: int, chunk: int = 1024
) -> float:
    """Share of ``samples`` that the model assigns to ``target`` once ``pattern`` is stamped
    through ``mask``, ``chunk`` samples per forward pass (0 for no samples)."""
    hits = sum(
        int((model(stamp(samples[i : i + chunk], mask, pattern)).argmax(1) == target).sum())
        for i in range(0, len(samples), chunk)
    )
    return hits / max(len(samples), 1)


@torch.no_grad()
def attack_success(
    model: nn.Module, mask: torch.Tensor, pattern: torch.Tensor, samples: torch.Tensor, target: int, chunk: int = 1024
) -> float | None:
    """Share of the samples not already assigned to ``target`` that the stamped trigger sends
    there; ``None`` when every sample is already assigned to it (nothing to measure, and JSON
    has no NaN). Forward passes take ``chunk`` samples at a time."""
    keep = torch.cat([model(samples[i : i + chunk]).argmax(1) != target for i in range(0, len(samples), chunk)])
    if keep.sum() == 0:
        return None
    return stamped_share(model, mask, pattern, samples[keep], target, chunk)


DECISION_CHUNK = 32  # samples per forward pass while a pass/fail test is still open


@torch.no_grad()
def stamp_flips(model, mask, pattern, samples, target: int, required: float, chunk: int = 1024) -> bool:
    """Whether stamping ``pattern`` through ``mask`` sends at least ``required`` of ``samples``
    to ``target`` (true when there are no samples to flip).

    The samples go through in small passes, and the test stops as soon as its answer is certain
    (enough hits already, or too many misses to reach them): a stamp that clearly fails is
    decided on a fraction of the samples. The answer is the same as counting them all."""
    total = len(samples)
    if total == 0:
        return True
    needed = math.ceil(required * total)  # the fewest hits h with h / total >= required
    while needed > 0 and (needed - 1) / total >= required:
        needed -= 1
    while needed / total < required:
        needed += 1
    hits, step = 0, max(1, min(chunk, DECISION_CHUNK))
    for start in range(0, total, step):
        batch = samples[start : start + step]
        hits += int((model(stamp(batch, mask, pattern)).argmax(1) == target).sum())
        seen = start + len(batch)
        if hits >= needed:
            return True
        if hits + (total - seen) < needed:
            return False
    return hits >= needed
