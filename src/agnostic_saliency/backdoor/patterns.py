"""Patterns fitted under a fixed mask: the fitted-box look's boxes, each with its own pattern,
and the recovered trigger's polish. The same tanh-space Adam fit as the signatures, with the mask
held still.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..method.integrate import MomentIntegrator
from .regions import spot_squares
from .stamps import from_tanh, stamp, stamp_flips, stamped_share, to_tanh


def fit_patterns(
    model: nn.Module,
    masks: torch.Tensor,
    pattern: torch.Tensor,
    samples: torch.Tensor,
    target: int,
    low: float,
    high: float,
    steps: int = 30,
    batch_size: int = 16,
    step_size: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """One pattern per mask of ``masks`` (R, H, W), each fitted with the mask held fixed so that
    ``(1 - mask) * x + mask * pattern`` sends ``samples`` to ``target``: ``steps`` Adam steps in
    tanh space (as in the signature fit) from ``pattern`` (C, H, W), on random batches of
    ``batch_size`` samples per mask. Returns the patterns (R, C, H, W) in the pixel range and the
    per-sample gradients spent."""
    generator = generator or torch.Generator().manual_seed(0)
    device = samples.device
    masks = masks.to(device)[:, None]  # (R, 1, H, W)
    logit = to_tanh(pattern.to(device), low, high, margin=1e-3).expand(len(masks), *pattern.shape).clone()
    moments = MomentIntegrator(step_size)
    labels = torch.full((len(masks) * batch_size,), target, device=device)
    for _ in range(steps):
        draw = torch.randint(0, len(samples), (len(masks), batch_size), generator=generator).to(device)
        logit.requires_grad_(True)
        stamped = stamp(samples[draw], masks, from_tanh(logit, low, high), batch_axis=1)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(stamped.flatten(0, 1)).float(), labels)
            (gradient,) = torch.autograd.grad(loss, logit)
        logit = (logit + moments.step(gradient)).detach()
    with torch.no_grad():
        return from_tanh(logit, low, high), steps * len(masks) * batch_size


def polished_pattern(
    model: nn.Module,
    mask: torch.Tensor,
    pattern: torch.Tensor,
    fit_samples: torch.Tensor,
    test_samples: torch.Tensor,
    target: int,
    low: float,
    high: float,
    steps: int = 50,
    batch_size: int = 32,
    step_size: float = 0.1,
    generator: torch.Generator | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, bool, int]:
    """The recovered trigger's pattern, refitted under its final mask.

    Why: the signature fit shapes pattern and mask together, under a price on the mask, so once
    the mask is hardened to a region or box the pattern inside it is rarely the best one (a
    recovered 3 px box matching the planted white patch exactly, but with grey pixels, flipped
    89% of real images where the planted patch flips 99.8%). The refit (:func:`fit_patterns`,
    ``steps`` steps on ``fit_samples``) is kept only if it sends at least as many of
    ``test_samples`` to ``target`` as the pattern it replaces. Returns (pattern, kept, per-sample
    gradients spent)."""
    if steps < 1 or len(fit_samples) == 0:
        return pattern, False, 0
    mask = mask.to(fit_samples.device)
    pattern = pattern.to(mask.device)
    refit, spent = fit_patterns(
        model, mask[None], pattern, fit_samples, target, low, high, steps, batch_size, step_size, generator
    )
    refit = torch.where(mask > 0, refit[0], pattern)  # outside the mask, exactly as it was (no tanh round trip)
    before = stamped_share(model, mask, pattern, test_samples, target, chunk)
    after = stamped_share(model, mask, refit, test_samples, target, chunk)
    return (refit, True, spent) if after >= before else (pattern, False, spent)


def fitted_box(
    model: nn.Module,
    region: torch.Tensor,
    pattern: torch.Tensor,
    fit_samples: torch.Tensor,
    test_samples: torch.Tensor,
    target: int,
    low: float,
    high: float,
    largest_side: int,
    placements: int = 3,
    steps: int = 30,
    batch_size: int = 16,
    step_size: float = 0.1,
    required: float = 0.8,
    generator: torch.Generator | None = None,
    chunk: int = 1024,
    boxes_per_pass: int | None = None,
) -> tuple[tuple[int, torch.Tensor, torch.Tensor] | None, int]:
    """The smallest square box, of side at most ``largest_side``, placed at one of the region's
    ``placements`` densest spots (:func:`.regions.box_spots`), whose own pattern, fitted inside it on
    ``fit_samples``, sends at least ``required`` of ``test_samples`` to ``target``.

    Why: on a network with global average pooling the signature fit can spread a trigger's
    evidence over scattered pixels, and its pattern under any one box is then not the trigger
    (the ``test`` split: a 5 px white patch on a resnet whose fitted-pattern box needed 196 px
    or more). Fitting the pattern inside the box finds the patch again. Such a box is an adversarial
    patch, stronger than a stamp of the fitted pattern, so the caller bounds it more tightly.

    Each box's pattern starts from the class's ``pattern`` and takes ``steps`` Adam steps (tanh
    space, as in the signature fit) on batches of ``batch_size`` samples. The largest side is
    fitted first, at every spot; only if one of those works are the smaller sides fitted, all at
    once, ``boxes_per_pass`` boxes (times ``batch_size`` samples) per forward and backward pass
    (default: all). Returns ((pixels, mask (H, W), pattern (C, H, W)) or None when no box
    works, per-sample gradients spent): a search that finds nothing has still spent them.
    """
    if largest_side < 1:
        return None, 0
    generator = generator or torch.Generator().manual_seed(0)
    region = region.to(fit_samples.device)
    fit = partial(
        _fit_boxes, model, region, pattern, fit_samples, test_samples, target, low, high, placements,
        steps, batch_size, step_size, required, generator, chunk, boxes_per_pass,
    )  # fmt: skip
    working, spent = fit([largest_side])
    if working:
        smaller, more = fit(range(1, largest_side))
        working, spent = working + smaller, spent + more
    if not working:
        return None, spent
    side, mask, stamp = min(working, key=lambda found: found[0])
    return (side * side, mask, stamp), spent


def _fit_boxes(
    model,
    region,
    pattern,
    fit_samples,
    test_samples,
    target: int,
    low: float,
    high: float,
    placements: int,
    steps: int,
    batch_size: int,
    step_size: float,
    required: float,
    generator,
    chunk: int,
    boxes_per_pass,
    sides,
) -> tuple[list, int]:
    """Each box of the ``sides`` at the region's spots, with its own pattern fitted inside it
    (:func:`fit_patterns`, ``boxes_per_pass`` boxes at a time): those whose stamp sends
    ``required`` of ``test_samples`` to ``target``, as (side, mask, pattern), and the per-sample
    gradients spent. The search behind :func:`fitted_box`."""
    boxes = [(side, mask) for side in sides for mask in spot_squares(region, side, placements)]
    if not boxes or len(fit_samples) == 0:
        return [], 0
    group = boxes_per_pass or len(boxes)
    masks = torch.stack([mask for _, mask in boxes])
    fitted = [
        fit_patterns(
            model,
            masks[g : g + group],
            pattern,
            fit_samples,
            target,
            low,
            high,
            steps,
            batch_size,
            step_size,
            generator,
        )
        for g in range(0, len(boxes), group)
    ]
    stamps = torch.cat([stamp for stamp, _ in fitted])
    with torch.no_grad():
        working = [
            (side, mask, stamps[row])
            for row, (side, mask) in enumerate(boxes)
            if stamp_flips(model, mask, stamps[row], test_samples, target, required, chunk)
        ]
    return working, sum(used for _, used in fitted)  # fmt: skip
