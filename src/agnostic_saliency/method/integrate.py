"""Integrating gradient information across samples and iterations.

Each map's gradient is averaged over the batch of samples (in ``nudge``); across iterations it is
integrated with first- and second-moment estimates (Adam-like, as in the predecessor methods of
Akhtar & Jalwana). The second moment equalises step sizes across pixels, so the step is
expressed in pixel-range units whatever the model's gradient scale.
"""

from __future__ import annotations

import torch


class MomentIntegrator:
    """Running moment estimates of the maps' gradient and the step they imply.

    Parameters
    ----------
    step_size : per-pixel step, as a fraction of the pixel range (default 0.01).
    beta1, beta2 : decay of the first and second moments (0.9, 0.999 as in Adam).
    """

    def __init__(self, step_size: float = 0.01, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.step_size, self.beta1, self.beta2, self.eps = step_size, beta1, beta2, eps
        self.first: torch.Tensor | None = None
        self.second: torch.Tensor | None = None
        self.count = 0

    def step(self, gradient: torch.Tensor, span: float = 1.0, index: torch.Tensor | None = None) -> torch.Tensor:
        """The descent step for ``gradient`` (same shape), after folding it into the moments.

        ``index``: the gradient holds only these maps (rows of the moments), the others keep
        their moments unchanged (maps that stopped early). All maps start together and a map
        only ever leaves, so the one step count is every moving map's own."""
        if self.first is None:
            self.first = torch.zeros_like(gradient)
            self.second = torch.zeros_like(gradient)
        self.count += 1
        if index is None:
            self.first.mul_(self.beta1).add_(gradient, alpha=1 - self.beta1)
            self.second.mul_(self.beta2).addcmul_(gradient, gradient, value=1 - self.beta2)
            first, second = self.first, self.second
        else:
            first = self.first[index].mul_(self.beta1).add_(gradient, alpha=1 - self.beta1)
            second = self.second[index].mul_(self.beta2).addcmul_(gradient, gradient, value=1 - self.beta2)
            self.first[index], self.second[index] = first, second
        first = first / (1 - self.beta1**self.count)
        second = second / (1 - self.beta2**self.count)
        return -self.step_size * span * first / (second.sqrt() + self.eps)

    def state_dict(self) -> dict:
        return {"first": self.first, "second": self.second, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` (a resumed run): the same steps follow."""
        self.first, self.second, self.count = state["first"], state["second"], int(state["count"])


def frequency_precondition(gradient: torch.Tensor, decay: float) -> torch.Tensor:
    """Scale each spatial frequency f of the gradient by ``(1 / max(f, 1/size)) ** decay``,
    renormalised so the l2 norm is kept.

    This is gradient descent in a decorrelated (Fourier, 1/f) parameterisation, as used in
    feature visualisation: low frequencies, where shapes live, move faster than the
    high-frequency patterns that only the explained model reads. ``decay = 0`` is the identity.
    """
    if decay <= 0:
        return gradient
    h, w = gradient.shape[-2:]
    fy = torch.fft.fftfreq(h, device=gradient.device).abs()[:, None]
    fx = torch.fft.rfftfreq(w, device=gradient.device)[None, :]
    frequency = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / max(h, w))
    spectrum = torch.fft.rfft2(gradient.float()) * frequency.pow(-decay)
    filtered = torch.fft.irfft2(spectrum, s=(h, w))
    scale = gradient.flatten(1).norm(dim=1) / filtered.flatten(1).norm(dim=1).clamp_min(1e-12)
    return (filtered * scale.view(-1, *([1] * (gradient.dim() - 1)))).to(gradient.dtype)


def total_variation_gradient(maps: torch.Tensor) -> torch.Tensor:
    """The gradient of the maps' isotropic total variation, sqrt(dx^2 + dy^2 + 1e-6) summed over
    pixels (each map's own: the maps do not interact).

    Total variation is low for flat regions bounded by edges (a silhouette) and high for stripes
    and ripples, whatever their frequency."""
    with torch.enable_grad():
        leaf = maps.detach().float().requires_grad_(True)
        dy = leaf[..., 1:, :-1] - leaf[..., :-1, :-1]
        dx = leaf[..., :-1, 1:] - leaf[..., :-1, :-1]
        variation = torch.sqrt(dx**2 + dy**2 + 1e-6).sum()
        (gradient,) = torch.autograd.grad(variation, leaf)
    return gradient.to(maps.dtype)


def with_total_variation(gradient: torch.Tensor, maps: torch.Tensor, weight: float) -> torch.Tensor:
    """The loss gradient plus the total variation's, scaled per map to ``weight`` times the loss
    gradient's l2 norm (so the weight means the same for any model's gradient scale)."""
    if weight <= 0:
        return gradient
    tv = total_variation_gradient(maps)
    shape = (-1,) + (1,) * (gradient.dim() - 1)
    ratio = gradient.flatten(1).norm(dim=1) / tv.flatten(1).norm(dim=1).clamp_min(1e-12)
    return gradient + weight * ratio.view(shape) * tv
