"""Input-specific attribution methods, through Captum, beside the input-agnostic map.

Every method explains one image for one class and returns a map of the image's height and
width. They are the ones researchers already use, called through Captum rather than
re-implemented:

- ``gradient``: the absolute input gradient (Simonyan et al. 2014), ``captum.attr.Saliency``;
- ``integrated-gradients``: Sundararajan et al. 2017, black baseline,
  ``captum.attr.IntegratedGradients``;
- ``smoothgrad``: Smilkov et al. 2017, the absolute gradient averaged over noisy copies,
  ``captum.attr.NoiseTunnel`` around ``Saliency``;
- ``grad-cam``: Selvaraju et al. 2017 on the last convolution (or a given layer),
  ``captum.attr.LayerGradCam`` upsampled bilinearly to the input size.

References
----------
N. Kokhlikyan et al., "Captum: A unified and generic model interpretability library for
PyTorch", arXiv:2009.07896, 2020.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from ..errors import InputError
from ..models.running import frozen
from ..models.spec import InputSpec, NormalizedModel

METHODS = ("gradient", "integrated-gradients", "smoothgrad", "grad-cam")
"""The input-specific methods, in display order."""


def find_last_conv(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The last ``nn.Conv2d`` in registration order (the usual Grad-CAM layer), or None.

    Registration order is the forward order for the usual ``Sequential`` and torchvision
    models; pass a layer by name where it is not.
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            found = (name, module)
    return found


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module] | None:
    """The named module of ``model`` (``"features.8"``), or the last conv layer when None."""
    if layer is None:
        return find_last_conv(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise InputError(f"the model has no layer {layer!r} (e.g. {', '.join(list(modules)[1:6])}, ...)")
    return layer, modules[layer]


def _channel_sum(attribution: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W): the per-pixel attribution, channels summed."""
    return attribution.sum(1)


def attribute(
    model: nn.Module,
    spec: InputSpec,
    images: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    methods: Sequence[str] = METHODS,
    layer: str | None = None,
    ig_steps: int = 32,
    smoothgrad_samples: int = 16,
    smoothgrad_noise: float = 0.15,
    batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """Input-specific maps of ``images`` for ``targets``, one (N, H, W) tensor per method.

    Parameters
    ----------
    model : the classifier, taking normalised inputs (its ``spec`` says how).
    spec : the input spec; images are in pixel space and normalised on the way in.
    images : (N, C, H, W) in the spec's value range.
    targets : one class index per image (typically the predicted class).
    methods : any of :data:`METHODS` (default all).
    layer : Grad-CAM's layer by module name (default: the last ``Conv2d``). A model without a
        conv layer gets no Grad-CAM map (with a warning) rather than an error.
    ig_steps : Riemann steps of Integrated Gradients (default 32; Captum's default is 50, and 32
        keeps the completeness error of these small nets below 1% of the logit gap).
    smoothgrad_samples, smoothgrad_noise : noisy copies per image and their noise standard
        deviation as a fraction of the pixel range (default 16 and 0.15, within the 10-20% that
        Smilkov et al. recommend).
    batch_size : images per Captum call.

    Returns
    -------
    dict from method name to (N, H, W) float maps on the CPU: signed for Integrated Gradients
    and Grad-CAM (ReLU'd, as in the paper), absolute for the gradient and SmoothGrad.

    The caller's model comes back as it was given (eval flags, ``requires_grad``, no hooks).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown attribution method {unknown[0]!r}; use {', '.join(METHODS)}")
    targets = torch.as_tensor(targets, dtype=torch.long)
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(spec.shape) or len(targets) != len(images):
        raise InputError(f"images must be (N, {', '.join(map(str, spec.shape))}) with one target each")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    wrapped = NormalizedModel(model, spec).to(device)
    conv = resolve_layer(model, layer) if "grad-cam" in methods else None
    if "grad-cam" in methods and conv is None:
        warnings.warn("the model has no Conv2d layer: no Grad-CAM map", stacklevel=2)
    out: dict[str, list[torch.Tensor]] = {m: [] for m in methods if m != "grad-cam" or conv is not None}
    with frozen(model):
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device).float().requires_grad_(True)
            t = targets[start:start + batch_size].to(device)
            for method in out:
                out[method].append(_one(method, wrapped, conv, spec, x, t, ig_steps, smoothgrad_samples,
                                        smoothgrad_noise).detach().float().cpu())
    return {method: torch.cat(parts) for method, parts in out.items()}


def _one(method, wrapped, conv, spec, x, t, ig_steps, smoothgrad_samples, smoothgrad_noise) -> torch.Tensor:
    if method == "gradient":
        return _channel_sum(Saliency(wrapped).attribute(x, target=t, abs=True))
    if method == "integrated-gradients":
        baseline = torch.full_like(x, spec.value_range[0])
        return _channel_sum(IntegratedGradients(wrapped).attribute(x, baselines=baseline, target=t, n_steps=ig_steps))
    if method == "smoothgrad":
        tunnel = NoiseTunnel(Saliency(wrapped))
        attribution = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=smoothgrad_samples,
                                       stdevs=smoothgrad_noise * spec.span, target=t, abs=True)
        return _channel_sum(attribution)
    cam = LayerGradCam(wrapped, conv[1]).attribute(x, target=t, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
