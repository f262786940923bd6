"""Activation maximisation: the data-free picture of a class that users would otherwise make.

Starting from noise, optimise one input per class for the class's logit, in the style of Lucid
and Lucent (Olah et al., "Feature Visualization", Distill 2017): optionally with random
jitter, scaling and rotation at every step (transformation robustness) and with a decorrelated
Fourier parameterisation (a spectrum scaled by ``1/f**decay`` and, for colour, Lucid's colour
decorrelation), squashed into the valid range by a sigmoid.

Unlike an input-agnostic map, the result is a whole *image*, not a perturbation that works on
any input. To compare both at the same budget, :func:`as_budget_maps` turns the image into a
signed pattern at the maps' l2 budget (its deviation from its mean grey level, scaled to the
same RMS); the displayed picture is unchanged by that, since it is min-max scaled either way.

References
----------
C. Olah, A. Mordvintsev, L. Schubert, "Feature Visualization", Distill, 2017.
A. Mordvintsev, N. Pezzotti, L. Schubert, C. Olah, "Differentiable Image Parameterizations",
Distill, 2018.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.running import frozen
from ..models.spec import InputSpec, NormalizedModel

PARAMETERISATIONS = ("pixel", "fourier")

# Lucid's square root of the colour covariance of ImageNet pictures (RGB), normalised so that
# its largest column has unit norm: colour channels are optimised decorrelated.
_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_CORRELATION = _COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()


@dataclass
class Robustness:
    """The random transforms applied to the image at every step (all 0: none).

    Lucid's standard transforms for 224-pixel images are pad 12, jitter 8, scale 0.9 to 1.1,
    rotation up to 10 degrees, jitter 4; here the pixel sizes are fractions of the image side
    so that the same recipe applies to 28- and 32-pixel inputs.

    Parameters
    ----------
    pad : padding with mid-grey, as a fraction of the side (Lucid: 12/224).
    jitter : largest random shift, as a fraction of the side (Lucid: 8/224 then 4/224; 2 pixels
        at 28 or 32 pixels).
    scale : largest relative rescaling (Lucid: 0.1).
    rotation : largest rotation in degrees (Lucid: 10).
    """

    pad: float = 12 / 224
    jitter: float = 0.07
    scale: float = 0.1
    rotation: float = 10.0

    @property
    def active(self) -> bool:
        return any(v > 0 for v in (self.pad, self.jitter, self.scale, self.rotation))


NO_ROBUSTNESS = Robustness(0.0, 0.0, 0.0, 0.0)


def fourier_scale(height: int, width: int, decay: float) -> torch.Tensor:
    """The ``1/f**decay`` amplitude of each rFFT frequency, (H, W//2+1), as in Lucid."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    frequency = (fy**2 + fx**2).sqrt()
    return 1.0 / frequency.clamp_min(1.0 / max(height, width)) ** decay


def random_transform(images: torch.Tensor, robustness: Robustness, generator: torch.Generator,
                     fill: float = 0.5) -> torch.Tensor:
    """One random pad + shift + scale + rotation of each image in [0, 1], differentiable,
    filling with ``fill`` (mid-grey) where the image moved away, cropped back to its size."""
    n, _, h, w = images.shape
    pad = round(robustness.pad * max(h, w))
    if pad > 0:
        images = F.pad(images - fill, (pad, pad, pad, pad)) + fill
    _, _, ph, pw = images.shape
    draw = torch.rand(n, 4, generator=generator) * 2 - 1
    scale = 1 + robustness.scale * draw[:, 0]
    angle = torch.deg2rad(robustness.rotation * draw[:, 1])
    shift_y = robustness.jitter * draw[:, 2] * 2 * h / ph
    shift_x = robustness.jitter * draw[:, 3] * 2 * w / pw
    # sample an (h, w) window of the padded picture: the crop undoes the padding's growth
    crop_y, crop_x = h / ph, w / pw
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * crop_x, -sin * crop_y, shift_x], 1),
                         torch.stack([sin * crop_x, cos * crop_y, shift_y], 1)], 1)
    grid = F.affine_grid(theta.to(images.device, images.dtype), [n, images.shape[1], h, w], align_corners=False)
    moved = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved + fill


class ImageParameters(nn.Module):
    """K images in [0, 1] from free parameters: plain pixels or a decorrelated Fourier spectrum,
    through a sigmoid (Lucid's ``to_valid_rgb``)."""

    def __init__(self, count: int, shape: Sequence[int], parameterisation: str = "fourier",
                 decay: float = 1.0, decorrelate_colour: bool = True, init_std: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise InputError(f"unknown parameterisation {parameterisation!r}; use {', '.join(PARAMETERISATIONS)}")
        channels, height, width = shape
        self.shape, self.parameterisation = tuple(shape), parameterisation
        self.decorrelate = decorrelate_colour and channels == 3
        if parameterisation == "pixel":
            raw = torch.randn(count, channels, height, width, generator=generator) * init_std
        else:
            raw = torch.randn(count, channels, height, width // 2 + 1, 2, generator=generator) * init_std
            self.register_buffer("scale", fourier_scale(height, width, decay)[None, None, :, :, None])
        self.raw = nn.Parameter(raw)

    def forward(self) -> torch.Tensor:
        _, height, width = self.shape
        if self.parameterisation == "pixel":
            image = self.raw
        else:
            spectrum = torch.view_as_complex((self.raw * self.scale).contiguous())
            image = torch.fft.irfft2(spectrum, s=(height, width), norm="ortho") / 4.0  # Lucid's "magic" 4
        if self.decorrelate:
            image = torch.einsum("kchw,dc->kdhw", image, COLOUR_CORRELATION.to(image))
        return torch.sigmoid(image)


class _Adam:
    """Adam (Kingma & Ba, 2015) with its usual constants, written out: ``torch.optim`` imports
    ``torch._dynamo`` on first use, which took 16 to 22 s on a busy CPU, longer than the
    optimisation of a small model."""

    def __init__(self, parameter: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.parameter, self.lr, self.betas, self.eps = parameter, lr, betas, eps
        self.first = torch.zeros_like(parameter)
        self.second = torch.zeros_like(parameter)
        self.count = 0

    @torch.no_grad()
    def step(self) -> None:
        gradient = self.parameter.grad
        b1, b2 = self.betas
        self.count += 1
        self.first.mul_(b1).add_(gradient, alpha=1 - b1)
        self.second.mul_(b2).addcmul_(gradient, gradient, value=1 - b2)
        first = self.first / (1 - b1**self.count)
        second = self.second / (1 - b2**self.count)
        self.parameter.sub_(self.lr * first / (second.sqrt() + self.eps))


@dataclass
class ActivationMaxResult:
    """Pictures (K, C, H, W) in the model's pixel range, one per target class, the final logit
    of each class on its picture, wall time and settings."""

    pictures: torch.Tensor
    targets: list[int]
    logits: list[float]
    seconds: float
    config: dict = field(default_factory=dict)


def activation_maximisation(
    model: nn.Module,
    spec: InputSpec,
    targets: Sequence[int],
    steps: int = 512,
    lr: float = 0.05,
    parameterisation: str = "fourier",
    robustness: Robustness | None = None,
    decay: float = 1.0,
    decorrelate_colour: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> ActivationMaxResult:
    """Optimise one image per target class for that class's logit, from noise (Adam).

    Parameters
    ----------
    model : maps (N, C, H, W) pixel-space batches (normalised by ``spec``) to logits; its
        train/eval flags and ``requires_grad`` are restored afterwards.
    spec : input shape, value range and normalisation.
    targets : class indices.
    steps, lr : Adam iterations and learning rate (Lucid/Lucent: 512 and 0.05).
    parameterisation : ``"fourier"`` (default, Lucid's decorrelated spectrum) or ``"pixel"``.
    robustness : random transforms per step; default :class:`Robustness` (Lucid's recipe
        scaled to the image), :data:`NO_ROBUSTNESS` for plain gradient ascent.
    decay : the spectrum's ``1/f**decay`` scaling (Lucid: 1).
    decorrelate_colour : Lucid's colour decorrelation for 3-channel inputs.
    seed : seeds the initial noise and every transform.
    """
    if steps < 0 or not lr > 0:
        raise InputError("steps must be >= 0 and lr > 0")
    robustness = Robustness() if robustness is None else robustness
    start = time.perf_counter()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    images = ImageParameters(len(targets), spec.shape, parameterisation, decay, decorrelate_colour,
                             generator=generator).to(device)
    wrapped = NormalizedModel(model, spec)
    low, span = spec.value_range[0], spec.span
    index = torch.tensor(list(targets), device=device)
    adam = _Adam(images.raw, lr)
    with frozen(model):  # eval mode, no parameter gradients; the caller's model comes back as given
        for _ in tqdm(range(steps), disable=not progress, desc="activation max", unit="step"):
            unit = images()
            if robustness.active:
                unit = random_transform(unit, robustness, generator)
            logits = wrapped(low + span * unit).float()
            loss = -logits.gather(1, index[:, None]).sum()
            images.raw.grad = None
            loss.backward()
            adam.step()
        with torch.no_grad():
            pictures = low + span * images()
            final = wrapped(pictures).float().gather(1, index[:, None]).squeeze(1)
    config = {"steps": steps, "lr": lr, "parameterisation": parameterisation, "decay": decay,
              "decorrelate_colour": decorrelate_colour and spec.shape[0] == 3, "seed": seed,
              "robustness": vars(robustness).copy()}
    return ActivationMaxResult(pictures.detach().cpu(), list(map(int, targets)), final.tolist(),
                               time.perf_counter() - start, config)


def as_budget_maps(pictures: torch.Tensor, rms: float | torch.Tensor) -> torch.Tensor:
    """Signed patterns to add to inputs: each picture minus its mean grey level, scaled to the
    given root-mean-square value (pixel units; one number or one per picture). The min-max
    scaled display of the pattern is the picture itself."""
    centred = pictures - pictures.flatten(1).mean(1).view(-1, *([1] * (pictures.dim() - 1)))
    current = centred.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    target = torch.as_tensor(rms, dtype=pictures.dtype).reshape(-1)
    factor = (target / current).view(-1, *([1] * (pictures.dim() - 1)))
    return centred * factor


def lucent_maximisation(model: nn.Module, spec: InputSpec, targets: Sequence[int], steps: int = 512,
                        robustness: Robustness | None = None, seed: int = 0) -> ActivationMaxResult:
    """The same through Lucent itself (``torch-lucent``): its Fourier image parameterisation
    (with colour decorrelation for RGB), its transforms (pad, jitter, scale, rotate, jitter) at
    the sizes of :class:`Robustness`, Adam at lr 0.05, and the class logit as the objective.
    Raises ``ImportError`` when Lucent is not installed."""
    from lucent.optvis import param as lucent_param
    from lucent.optvis import render as lucent_render
    from lucent.optvis import transform as lucent_transform

    robustness = Robustness() if robustness is None else robustness
    channels, height, width = spec.shape
    side = max(height, width)
    pad, jitter = max(1, round(robustness.pad * side)), max(2, round(robustness.jitter * side))  # Lucent: jitter > 1
    scales = [1 + robustness.scale * (i - 5) / 5 for i in range(11)]
    angles = list(range(-round(robustness.rotation), round(robustness.rotation) + 1)) + 5 * [0]
    transforms = [lucent_transform.pad(pad, mode="constant", constant_value=0.5), lucent_transform.jitter(jitter),
                  lucent_transform.random_scale(scales), lucent_transform.random_rotate(angles),
                  lucent_transform.jitter(2)]

    class Output(nn.Module):  # the wrapped model, remembering its last logits for the objective
        def __init__(self):
            super().__init__()
            self.inner = NormalizedModel(model, spec)
            self.last = None

        def forward(self, unit):
            # Lucent's scale/rotate may leave the grid a pixel off: resample to the input size
            if tuple(unit.shape[-2:]) != (height, width):
                unit = F.interpolate(unit, size=(height, width), mode="bilinear", align_corners=False)
            self.last = self.inner(spec.value_range[0] + spec.span * unit).float()
            return self.last

    start = time.perf_counter()
    wrapper = Output().eval()
    # Lucent draws from the global torch and NumPy generators: seed them, then give them back
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            pictures = [_lucent_picture(lucent_render, lucent_param, wrapper, spec, target, steps, transforms)
                        for target in targets]
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    pictures = torch.stack(pictures)
    wrapped = NormalizedModel(model, spec)
    with torch.no_grad():
        final = wrapped(pictures).float().gather(1, torch.tensor(list(targets))[:, None]).squeeze(1)
    return ActivationMaxResult(pictures, list(map(int, targets)), final.tolist(), time.perf_counter() - start,
                               {"steps": steps, "implementation": "torch-lucent", "pad": pad, "jitter": jitter,
                                "scales": scales, "max_rotation": robustness.rotation, "seed": seed})


def _lucent_picture(lucent_render, lucent_param, wrapper, spec, target, steps, transforms) -> torch.Tensor:
    channels, height, width = spec.shape

    def objective(_hook):
        return -wrapper.last[:, target].mean()

    images = lucent_render.render_vis(
        wrapper, objective,
        param_f=lambda: lucent_param.image(width, height, channels=None if channels == 3 else channels),
        transforms=list(transforms), thresholds=(steps,), preprocess=False, progress=False, show_image=False,
        fixed_image_size=(height, width))
    picture = torch.from_numpy(images[-1]).permute(0, 3, 1, 2)[0].float()
    return spec.value_range[0] + spec.span * picture
