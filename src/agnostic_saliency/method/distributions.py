"""Where the i.i.d. samples come from: the *unrestricted* distribution D of the method.

Every distribution draws pixel-space batches (N, C, H, W) inside the model's value range from a
``torch.Generator``, so a seed reproduces a run. The default, ``dark2+uniform+shapes``, mixes
dimmed noise, noise of random brightness and random shapes: a map that must work on dark, busy
and structured samples alike has to draw the concept rather than exploit one noise level. The
readable preset leaves the uniform noise out (docs/design.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import InputError
from ..models.spec import InputSpec


def host_to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU-drawn tensor on ``device``, the same values. To a GPU it goes through pinned memory
    without blocking: a copy from pageable memory makes the host wait for all the GPU's queued
    work, once per step, leaving the GPU idle while the next samples are drawn."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero padded): a cheap augmentation."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, padded.shape[3])
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


class Distribution:
    """Base class: ``sample(n, generator, device)`` returns n pixel-space samples."""

    name = "distribution"

    def __init__(self, spec: InputSpec):
        self.spec = spec

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        raise NotImplementedError

    def _to_range(self, unit: torch.Tensor) -> torch.Tensor:
        low, high = self.spec.value_range
        return low + (high - low) * unit

    def describe(self) -> str:
        return self.name


def _per_sample(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=generator)


class UniformNoise(Distribution):
    """Uniform noise; with ``vary_brightness`` each sample has its own random [low, high] range.

    Parameters
    ----------
    vary_brightness : draw per sample ``low ~ U(0, 1)``, ``high ~ U(low, 1)`` (as fractions of the
        pixel range) and fill with U(low, high). Default True: it made maps more recognisable to
        an ordinary judge (not evidence a person can read them; docs/readable_maps.md).
    """

    name = "uniform"

    def __init__(self, spec: InputSpec, vary_brightness: bool = True):
        super().__init__(spec)
        self.vary_brightness = vary_brightness

    def sample(self, n, generator, device="cpu"):
        unit = torch.rand(n, *self.spec.shape, generator=generator)
        if self.vary_brightness:
            low = _per_sample(n, generator)
            high = low + (1 - low) * _per_sample(n, generator)
            unit = low + (high - low) * unit
        return host_to_device(self._to_range(unit), device)

    def describe(self):
        return "uniform" if self.vary_brightness else "uniform-flat"


class DarkNoise(Distribution):
    """Uniform noise scaled by a per-sample brightness ``b ~ U(0, 1)**power``: many samples are
    near black, so a map must draw its concept by itself rather than only bend existing texture."""

    name = "dark"

    def __init__(self, spec: InputSpec, power: float = 1.0):
        super().__init__(spec)
        self.power = power

    def sample(self, n, generator, device="cpu"):
        unit = torch.rand(n, *self.spec.shape, generator=generator)
        scale = _per_sample(n, generator) ** self.power
        return host_to_device(self._to_range(scale * unit), device)

    def describe(self):
        return "dark" if self.power == 1 else f"dark{self.power:g}"


class RandomShapes(Distribution):
    """Procedural "dead leaves" pictures: 1 to ``max_shapes`` filled ellipses and rectangles of
    random size, position and brightness on a dark background, with mild noise.

    Data-free, yet far less degenerate than noise: a classifier answers many different classes
    for such pictures instead of the one class it gives every noise sample.
    """

    name = "shapes"

    def __init__(self, spec: InputSpec, max_shapes: int = 4, noise: float = 0.05):
        super().__init__(spec)
        self.max_shapes, self.noise = max_shapes, noise

    def sample(self, n, generator, device="cpu"):
        channels, height, width = self.spec.shape
        ys = torch.linspace(0, 1, height).view(1, height, 1)
        xs = torch.linspace(0, 1, width).view(1, 1, width)
        canvas = torch.zeros(n, height, width)
        count = torch.randint(1, self.max_shapes + 1, (n,), generator=generator)
        for index in range(self.max_shapes):
            draw = torch.rand(n, 6, generator=generator)
            cy, cx = draw[:, 0:1, None], draw[:, 1:2, None]
            ry, rx = 0.05 + 0.4 * draw[:, 2:3, None], 0.05 + 0.4 * draw[:, 3:4, None]
            ellipse = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
            rectangle = ((ys - cy).abs() < ry) & ((xs - cx).abs() < rx)
            inside = torch.where(draw[:, 4:5, None] < 0.5, ellipse, rectangle) & (index < count).view(n, 1, 1)
            brightness = (0.3 + 0.7 * draw[:, 5:6, None]).expand_as(canvas)
            canvas = torch.where(inside, brightness, canvas)
        unit = canvas[:, None].expand(n, channels, height, width)
        unit = (unit + self.noise * torch.randn(n, channels, height, width, generator=generator)).clamp(0, 1)
        return host_to_device(self._to_range(unit), device)


class GaussianNoise(Distribution):
    """Gaussian noise clipped to the range; per-sample mean U(0,1) and std U(0, 0.5) of the range."""

    name = "gaussian"

    def sample(self, n, generator, device="cpu"):
        mean = _per_sample(n, generator)
        std = 0.5 * _per_sample(n, generator)
        unit = (mean + std * torch.randn(n, *self.spec.shape, generator=generator)).clamp(0, 1)
        return host_to_device(self._to_range(unit), device)


class ImageDistribution(Distribution):
    """Unlabeled images of anything, drawn with replacement, with a random flip and shift.

    ``images`` are pixel-space (N, C, H, W) tensors already in the model's shape.
    """

    name = "images"

    def __init__(self, spec: InputSpec, images: torch.Tensor, max_shift: int = 2):
        super().__init__(spec)
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(spec.shape):
            raise InputError(f"images must be (N, {','.join(map(str, spec.shape))}), got {tuple(images.shape)}")
        if len(images) == 0:
            raise InputError("the image distribution needs at least one image")
        self.images = images
        self.max_shift = max_shift

    def sample(self, n, generator, device="cpu"):
        index = torch.randint(0, len(self.images), (n,), generator=generator)
        batch = self.images[index].clone()
        flip = torch.rand(n, generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
        if self.max_shift:
            batch = random_shift(batch, self.max_shift, generator)
        return host_to_device(self.spec.clamp(batch), device)


class Mixture(Distribution):
    """Each sample comes from one of ``parts``, chosen with probability ``weights``."""

    name = "mixture"

    def __init__(self, spec: InputSpec, parts: Sequence[Distribution], weights: Sequence[float] | None = None):
        super().__init__(spec)
        if not parts:
            raise InputError("a mixture needs at least one distribution")
        self.parts = list(parts)
        weights = torch.tensor(weights if weights is not None else [1.0] * len(parts), dtype=torch.float64)
        if len(weights) != len(parts) or (weights < 0).any() or weights.sum() <= 0:
            raise InputError("mixture weights must be non-negative, one per part, not all zero")
        self.weights = weights / weights.sum()

    def sample(self, n, generator, device="cpu"):
        choice = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        out = torch.empty(n, *self.spec.shape)
        for i, part in enumerate(self.parts):
            where = (choice == i).nonzero().flatten()
            if len(where):
                out[where] = part.sample(len(where), generator).cpu()
        return host_to_device(out, device)

    def describe(self):
        return "+".join(p.describe() for p in self.parts)


class CallableDistribution(Distribution):
    """Wraps a user callable ``fn(n, generator) -> (n, C, H, W)`` tensor, checked on every call."""

    name = "callable"

    def __init__(self, spec: InputSpec, fn: Callable[[int, torch.Generator], torch.Tensor]):
        super().__init__(spec)
        self.fn = fn

    def sample(self, n, generator, device="cpu"):
        batch = self.fn(n, generator)
        if not isinstance(batch, torch.Tensor) or tuple(batch.shape) != (n, *self.spec.shape):
            got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise InputError(
                f"the sampling callable must return ({n}, {','.join(map(str, self.spec.shape))}), got {got}"
            )
        return host_to_device(self.spec.clamp(batch.float()), device)

    def describe(self):
        return getattr(self.fn, "__name__", "callable")


NAMED = {
    "uniform": UniformNoise,
    "uniform-flat": lambda spec: UniformNoise(spec, vary_brightness=False),
    "gaussian": GaussianNoise,
    "dark": DarkNoise,
    "dark2": lambda spec: DarkNoise(spec, power=2.0),
    "dark3": lambda spec: DarkNoise(spec, power=3.0),
    "shapes": RandomShapes,
}


# The maps' default: a third each of dimmed noise (``dark2``), noise of random brightness
# (``uniform``) and random shapes. On fmnist-cnn and an unseen VGG-style net (CPU, seed 0, 10,000
# test images) adding the shapes raised the test fooling rate from 0.943 to 0.955 and from 0.897
# to 0.927, and the ordinary judge fmnist-mlp's readings from 8 to 9 and from 7 to 9 of 10 (an
# ordinary judge shares the model's texture features, so its reading is not evidence a person can
# read the maps; the robust judge and the panel are in docs/readable_maps.md).
DEFAULT_DISTRIBUTION = "dark2+uniform+shapes"


def make_distribution(
    choice: str | Distribution | Callable | None, spec: InputSpec, images: torch.Tensor | None = None
) -> Distribution:
    """A distribution from a name (``uniform``, ``uniform-flat``, ``gaussian``, ``images``, or a
    ``+``-joined mixture such as ``uniform+images``), an instance, or a callable. ``None`` means
    :data:`DEFAULT_DISTRIBUTION`, so leaving the choice out and passing None agree."""
    if choice is None:
        choice = DEFAULT_DISTRIBUTION
    if isinstance(choice, Distribution):
        return choice
    if callable(choice):
        return CallableDistribution(spec, choice)
    parts = []
    for name in str(choice).split("+"):
        name = name.strip()
        if name == "images":
            if images is None:
                raise InputError("the 'images' distribution needs a folder of images (--images DIR)")
            parts.append(ImageDistribution(spec, images))
        elif name in NAMED:
            parts.append(NAMED[name](spec))
        else:
            raise InputError(f"unknown distribution {name!r}; use {', '.join([*NAMED, 'images'])} or a '+' mixture")
    return parts[0] if len(parts) == 1 else Mixture(spec, parts)
