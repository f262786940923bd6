"""Patterns fitted under a fixed mask: the recovered trigger's polish. The same tanh-space Adam
fit as the signatures, with the mask held still.
"""

from __future__ import annotations

import torch
from torch import nn

from ..method.integrate import MomentIntegrator
from .stamps import from_tanh, stamp, stamped_share, to_tanh


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
    tanh space (as in the signature fit) from ``pattern`` (C, H, W; or one per mask,
    (R, C, H, W)), on random batches of
    ``batch_size`` samples per mask. Returns the patterns (R, C, H, W) in the pixel range and the
    per-sample gradients spent."""
    generator = generator or torch.Generator().manual_seed(0)
    device = samples.device
    masks = masks.to(device)[:, None]  # (R, 1, H, W)
    logit = to_tanh(pattern.to(device), low, high, margin=1e-3)
    logit = (logit if logit.dim() == masks.dim() else logit.expand(len(masks), *pattern.shape)).clone()
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
