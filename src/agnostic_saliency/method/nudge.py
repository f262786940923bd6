"""Nudging samples toward a concept: the loss whose gradient moves the shared maps.

The concepts themselves (class sets as a boolean matrix, their log-probability) live in
:mod:`agnostic_saliency.concepts`, shared with the fidelity metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..concepts import concept_hits, concept_log_probability
from .distributions import host_to_device


def shift_maps(maps: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Roll each map by a random offset of up to ``max_shift`` pixels (one offset per map per
    step). Random shifts during nudging make the map draw shift-robust shapes rather than
    pixel-exact adversarial noise."""
    if max_shift <= 0:
        return maps
    shifts = torch.randint(-max_shift, max_shift + 1, (len(maps), 2), generator=generator)
    shifts = host_to_device(shifts, maps.device)
    # One gather for all maps, the exact values of torch.roll per map: a pixel index for each
    # output pixel, wrapped around; no per-map loop and no offsets read back to the host.
    k, h, w = maps.shape[0], maps.shape[-2], maps.shape[-1]
    rows = (torch.arange(h, device=maps.device) - shifts[:, :1]) % h
    cols = (torch.arange(w, device=maps.device) - shifts[:, 1:]) % w
    flat = maps.reshape(k, -1, h * w)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(k, 1, h * w).expand(k, flat.shape[1], h * w)
    return flat.gather(2, index).view(maps.shape)


def transform_maps(maps: torch.Tensor, max_shift: int, max_scale: float, max_rotation: float,
                   generator: torch.Generator) -> torch.Tensor:
    """A random similarity transform of each map (shift in pixels, scale by up to ``1 +/-
    max_scale``, rotation by up to ``max_rotation`` degrees), differentiable in the maps.

    Pure shifts use an exact integer roll; otherwise bilinear resampling with zero padding (zero
    is "no perturbation"). Transformation robustness keeps the maps from relying on pixel-exact
    high-frequency patterns, which only the explained model can read.
    """
    if max_scale <= 0 and max_rotation <= 0:
        return shift_maps(maps, max_shift, generator)
    k, _, h, w = maps.shape
    draw = torch.rand(k, 4, generator=generator) * 2 - 1
    scale = 1 + max_scale * draw[:, 0]
    angle = torch.deg2rad(max_rotation * draw[:, 1])
    shift_y = max_shift * draw[:, 2] * 2 / h
    shift_x = max_shift * draw[:, 3] * 2 / w
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    theta = host_to_device(theta, maps.device).to(maps.dtype)
    grid = F.affine_grid(theta, list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def diversify_inputs(inputs: torch.Tensor, max_scale: float, max_shift: int, low: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Randomly shrink (by up to ``max_scale``) and shift each whole input before the model sees
    it, padding with the range's low value; differentiable. Perturbations that survive such
    "input diversity" transfer to other models (Xie et al., CVPR 2019), which is what makes a
    map readable by an independent observer rather than by the explained model alone."""
    if max_scale <= 0 and max_shift <= 0:
        return inputs
    n, _, h, w = inputs.shape
    draw = torch.rand(n, 3, generator=generator)
    scale = 1 + max_scale * draw[:, 0]  # > 1 in the sampling grid = the content shrinks
    shift_y = max_shift * (2 * draw[:, 1] - 1) * 2 / h
    shift_x = max_shift * (2 * draw[:, 2] - 1) * 2 / w
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([scale, zero, shift_x], 1), torch.stack([zero, scale, shift_y], 1)], 1)
    grid = F.affine_grid(host_to_device(theta, inputs.device).to(inputs.dtype), list(inputs.shape),
                         align_corners=False)
    moved = F.grid_sample(inputs - low, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved + low


def input_gradients(model, samples, maps, concepts, low, high, normalize: bool,
                    diversity: tuple[float, int] = (0.0, 0), generator: torch.Generator | None = None):
    """Mean over samples of the gradient of -log P(concept) w.r.t. each perturbed input, i.e.
    the gradient w.r.t. each map (K, C, H, W), and the (K, B) hits.

    The gradient is taken per sample (the input of sample i is clip(x_i + rho_k)), so it can be
    normalised to unit l2 before averaging: every sample then gets an equal vote, and features
    that many samples agree on win over the few samples with the steepest loss. Pixels clipped at
    the range's edge pass no gradient, as through ``clamp``.
    """
    k, b = maps.shape[0], samples.shape[0]
    raw = samples[None] + maps[:, None]
    inside = (raw > low) & (raw < high)  # multiplied as 1.0 / 0.0: no float copy of the mask
    inputs = raw.clamp_(low, high).requires_grad_(True)
    flat = inputs.reshape(k * b, *samples.shape[1:])
    if generator is not None:
        flat = diversify_inputs(flat, diversity[0], diversity[1], low, generator)
    logits = model(flat).reshape(k, b, -1).float()
    loss = -concept_log_probability(logits, concepts).sum()
    (gradient,) = torch.autograd.grad(loss, inputs)
    gradient.mul_(inside)  # the gradient is a fresh tensor: in place saves a copy of K x B inputs
    if normalize:
        norms = gradient.flatten(2).norm(dim=2).clamp_min(1e-12)
        gradient.div_(norms.view(k, b, *([1] * (gradient.dim() - 2))))
    return gradient.sum(1), concept_hits(logits.detach(), concepts)
