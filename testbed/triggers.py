"""Backdoor triggers: BadNets-style patches, small signs and lines, and blended full-image patterns.

A trigger is a mask ``m`` (H, W) in [0, 1] and a pattern ``p`` (C, H, W) in pixel space [0, 1];
stamping it on an image ``x`` gives ``(1 - m) * x + m * p``. The same form covers a hard patch
(``m`` is 1 on the patch, 0 elsewhere) and a blend (``m = alpha`` everywhere), and it is the form
Neural Cleanse and the scan recover, so true and recovered triggers compare directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from agnostic_saliency.errors import InputError

PATCH_PATTERNS = ("white", "checkerboard", "random")
BLEND_PATTERNS = ("random", "stripes", "checkerboard", "waves", "blobs")
SIGNS = ("plus", "x", "hline", "vline")
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass
class Trigger:
    """A trigger in mask-and-pattern form.

    Attributes
    ----------
    mask : tensor (H, W) in [0, 1]
        Per-pixel weight of the pattern.
    pattern : tensor (C, H, W) in [0, 1]
        The pixel values written where the mask is 1.
    kind : "patch" or "blend"
    size : patch side in pixels (None for a blend).
    position : (row, col) of the patch's top-left pixel (None for a blend).
    pattern_name : how the pattern was made ("white", "checkerboard", "random", "stripes", ...).
    alpha : blend weight (None for a patch).
    seed : seed of a random pattern (None if not random).
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    kind: str = "patch"
    size: int | None = None
    position: tuple[int, int] | None = None
    pattern_name: str | None = None
    alpha: float | None = None
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mask = torch.as_tensor(self.mask, dtype=torch.float32)
        self.pattern = torch.as_tensor(self.pattern, dtype=torch.float32)
        if self.mask.ndim != 2:
            raise InputError(f"trigger mask must be (H, W), got shape {tuple(self.mask.shape)}")
        if self.pattern.ndim != 3 or self.pattern.shape[1:] != self.mask.shape:
            raise InputError(
                f"trigger pattern must be (C, H, W) with (H, W) = {tuple(self.mask.shape)}, "
                f"got shape {tuple(self.pattern.shape)}"
            )
        if self.kind not in ("patch", "blend"):
            raise InputError(f"trigger kind must be 'patch' or 'blend', got {self.kind!r}")
        for name, t in (("mask", self.mask), ("pattern", self.pattern)):
            if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
                raise InputError(f"trigger {name} must be finite and in [0, 1]")
        if self.position is not None:
            self.position = (int(self.position[0]), int(self.position[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the trigger applies to."""
        return tuple(self.pattern.shape)

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """``(1 - mask) * x + mask * pattern`` for one image (C, H, W) or a batch (N, C, H, W)."""
        if x.shape[-3:] != self.pattern.shape:
            raise InputError(f"trigger is for images of shape {self.shape}, got {tuple(x.shape[-3:])}")
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        pattern = self.pattern.to(device=x.device, dtype=x.dtype)
        return (1 - mask) * x + mask * pattern

    def offsets(self) -> list[tuple[int, int]]:
        """Every (rows, columns) shift that keeps the mask's support inside the image, (0, 0) included."""
        rows, cols = self.mask.sum(1).nonzero()[:, 0], self.mask.sum(0).nonzero()[:, 0]
        if len(rows) == 0:
            return [(0, 0)]
        height, width = self.mask.shape
        top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        return [(dy, dx) for dy in range(-top, height - bottom) for dx in range(-left, width - right)]

    def moved(self, dy: int, dx: int) -> Trigger:
        """The same trigger, mask and pattern shifted by ``dy`` rows and ``dx`` columns (pixels
        pushed off one edge come back at the other: keep to :meth:`offsets`)."""
        return Trigger(
            torch.roll(self.mask, (dy, dx), (0, 1)),
            torch.roll(self.pattern, (dy, dx), (1, 2)),
            kind=self.kind,
            size=self.size,
            position=None if self.position is None else (self.position[0] + dy, self.position[1] + dx),
            pattern_name=self.pattern_name,
            alpha=self.alpha,
            seed=self.seed,
        )

    def describe(self) -> dict:
        """JSON-ready description (without the tensors)."""
        return {
            "kind": self.kind,
            "size": self.size,
            "position": list(self.position) if self.position is not None else None,
            "pattern": self.pattern_name,
            "alpha": self.alpha,
            "seed": self.seed,
            "shape": list(self.shape),
            "mask_l1": float(self.mask.sum()),
            **self.extra,
        }


def _resolve_position(position, size: int, height: int, width: int) -> tuple[int, int]:
    # Named corners keep a 1-pixel margin, as BadNets does, so the patch stays fully visible.
    if isinstance(position, str):
        if position not in CORNERS:
            raise InputError(f"unknown patch position {position!r}; use (row, col) or one of {CORNERS}")
        row = 1 if position.startswith("top") else height - 1 - size
        col = 1 if position.endswith("left") else width - 1 - size
        return row, col
    try:
        row, col = (int(v) for v in position)
    except (TypeError, ValueError) as exc:
        raise InputError(f"patch position must be (row, col) or a corner name, got {position!r}") from exc
    if not (0 <= row <= height - size and 0 <= col <= width - size):
        raise InputError(f"a {size}px patch at ({row}, {col}) does not fit a {height}x{width} image")
    return row, col


def patch_trigger(
    size: int = 4,
    position=(23, 23),
    pattern: str = "white",
    seed: int = 0,
    shape: tuple[int, int, int] = (1, 28, 28),
) -> Trigger:
    """A BadNets-style square patch.

    Parameters
    ----------
    size : side of the square in pixels.
    position : (row, col) of its top-left pixel, or a corner name ("bottom-right", ...).
    pattern : "white" (all ones), "checkerboard" (alternating 1/0 pixels) or "random" (binary
        pixels drawn with ``seed``).
    seed : seed of the random pattern.
    shape : (C, H, W) of the images.
    """
    c, h, w = shape
    if not 1 <= size <= min(h, w):
        raise InputError(f"patch size must be in 1..{min(h, w)}, got {size}")
    if pattern not in PATCH_PATTERNS:
        raise InputError(f"unknown patch pattern {pattern!r}; use one of {PATCH_PATTERNS}")
    row, col = _resolve_position(position, size, h, w)
    if pattern == "white":
        content = torch.ones(c, size, size)
    elif pattern == "checkerboard":
        ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        content = ((ii + jj) % 2 == 0).float().expand(c, size, size).clone()
    else:
        generator = torch.Generator().manual_seed(seed)
        content = (torch.rand(c, size, size, generator=generator) > 0.5).float()
        # An all-black patch would be invisible on the black background of Fashion-MNIST.
        content.view(-1)[0] = 1.0
    mask = torch.zeros(h, w)
    mask[row : row + size, col : col + size] = 1.0
    full = torch.zeros(c, h, w)
    full[:, row : row + size, col : col + size] = content
    return Trigger(
        mask,
        full,
        kind="patch",
        size=size,
        position=(row, col),
        pattern_name=pattern,
        seed=seed if pattern == "random" else None,
    )


def sign_trigger(
    sign: str = "plus",
    size: int = 5,
    position=(1, 1),
    shape: tuple[int, int, int] = (1, 28, 28),
) -> Trigger:
    """A small white sign or a 1-pixel line: only its own pixels are stamped (the mask is 1 on them
    and 0 elsewhere, the square around a sign included).

    Parameters
    ----------
    sign : "plus" (a 1-pixel cross through the middle of a ``size`` x ``size`` square; ``size``
        odd), "x" (the square's two diagonals), "hline" or "vline" (a line 1 pixel wide and
        ``size`` pixels long).
    size : side of the sign's square, or the line's length, in pixels.
    position : (row, col) of the top-left pixel of the sign's square or of the line.
    shape : (C, H, W) of the images.
    """
    c, h, w = shape
    if sign not in SIGNS:
        raise InputError(f"unknown trigger sign {sign!r}; use one of {SIGNS}")
    if not 2 <= size <= min(h, w):
        raise InputError(f"sign size must be in 2..{min(h, w)}, got {size}")
    if sign == "plus" and size % 2 == 0:
        raise InputError(f"a plus needs an odd size to have a middle pixel, got {size}")
    rows, cols = {"hline": (1, size), "vline": (size, 1)}.get(sign, (size, size))
    try:
        row, col = (int(v) for v in position)
    except (TypeError, ValueError) as exc:
        raise InputError(f"sign position must be (row, col), got {position!r}") from exc
    if not (0 <= row <= h - rows and 0 <= col <= w - cols):
        raise InputError(f"a {rows}x{cols} {sign} at ({row}, {col}) does not fit a {h}x{w} image")
    ii, jj = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    if sign == "plus":
        on = (ii == size // 2) | (jj == size // 2)
    elif sign == "x":
        on = (ii == jj) | (ii + jj == size - 1)
    else:
        on = torch.ones(rows, cols, dtype=torch.bool)
    mask = torch.zeros(h, w)
    mask[row : row + rows, col : col + cols] = on.float()
    return Trigger(mask, mask.expand(c, h, w).clone(), kind="patch", size=size, position=(row, col), pattern_name=sign)


def blend_trigger(
    alpha: float = 0.15,
    pattern: str = "random",
    seed: int = 0,
    shape: tuple[int, int, int] = (1, 28, 28),
) -> Trigger:
    """A blended full-image trigger (Chen et al. 2017): ``(1 - alpha) * x + alpha * pattern``.

    Parameters
    ----------
    alpha : blend weight in (0, 1].
    pattern : "random" (uniform noise drawn with ``seed``), "stripes" (diagonal sine stripes, a
        stand-in for the Hello-Kitty image of the original attack), "checkerboard" (2-pixel
        squares) or "waves" (a smooth low-frequency texture: the product of a vertical and a
        horizontal cosine of period 14 px, two bright and two dark bumps each way) or "blobs" (a
        smooth random texture: uniform noise drawn with ``seed``, blurred by a Gaussian of sigma 3 px
        with wrap-around, stretched to [0, 1]).
    seed : seed of a random pattern.
    shape : (C, H, W) of the images.
    """
    if not 0 < alpha <= 1:
        raise InputError(f"blend alpha must be in (0, 1], got {alpha}")
    if pattern not in BLEND_PATTERNS:
        raise InputError(f"unknown blend pattern {pattern!r}; use one of {BLEND_PATTERNS}")
    c, h, w = shape
    ii, jj = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    if pattern == "random":
        generator = torch.Generator().manual_seed(seed)
        full = torch.rand(c, h, w, generator=generator)
    elif pattern == "stripes":
        full = (0.5 + 0.5 * torch.sin(2 * math.pi * (ii + jj) / 6)).expand(c, h, w).clone()
    elif pattern == "waves":
        wave = torch.cos(2 * math.pi * ii / 14) * torch.cos(2 * math.pi * jj / 14)
        full = (0.5 + 0.5 * wave).expand(c, h, w).clone()
    elif pattern == "blobs":
        full = _blobs(seed, h, w).expand(c, h, w).clone()
    else:
        full = (((ii // 2) + (jj // 2)) % 2).expand(c, h, w).clone()
    mask = torch.full((h, w), float(alpha))
    return Trigger(
        mask, full, kind="blend", pattern_name=pattern, alpha=float(alpha),
        seed=seed if pattern in ("random", "blobs") else None,
    )


def _blobs(seed: int, h: int, w: int, sigma: float = 3.0) -> torch.Tensor:
    """Seeded uniform noise low-passed by a wrap-around Gaussian of ``sigma`` px (in the Fourier
    domain), stretched to [0, 1]: bright and dark blobs a few pixels across."""
    noise = torch.rand(h, w, generator=torch.Generator().manual_seed(seed))
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    gain = torch.exp(-2 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    smooth = torch.fft.ifft2(torch.fft.fft2(noise - noise.mean()) * gain).real
    return (smooth - smooth.min()) / (smooth.max() - smooth.min()).clamp_min(1e-12)


def save_trigger(trigger: Trigger, path: str | Path) -> None:
    """Write ``mask`` and ``pattern`` tensors to a safetensors file, the description as metadata."""
    tensors = {"mask": trigger.mask.contiguous(), "pattern": trigger.pattern.contiguous()}
    save_file(tensors, str(path), metadata={"trigger": json.dumps(trigger.describe())})


def load_trigger(path: str | Path) -> Trigger:
    """Read a trigger written by :func:`save_trigger` (or any file with ``mask`` and ``pattern``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"trigger file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if not {"mask", "pattern"} <= keys:
                raise InputError(f"{path} lacks 'mask' and 'pattern' tensors (has {sorted(keys)})")
            mask, pattern = f.get_tensor("mask"), f.get_tensor("pattern")
            meta = json.loads((f.metadata() or {}).get("trigger", "{}"))
    except InputError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise InputError(f"cannot read trigger file {path}: {exc}") from exc
    known = {"kind", "size", "position", "pattern", "alpha", "seed", "shape", "mask_l1"}
    return Trigger(
        mask,
        pattern,
        kind=meta.get("kind", "patch"),
        size=meta.get("size"),
        position=tuple(meta["position"]) if meta.get("position") is not None else None,
        pattern_name=meta.get("pattern"),
        alpha=meta.get("alpha"),
        seed=meta.get("seed"),
        extra={k: v for k, v in meta.items() if k not in known},
    )


def poison_transform(
    trigger: Trigger, target: int, rate: float = 0.1
) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A batch transform for ``train_classifier`` that poisons a ``rate`` fraction of each batch.

    The chosen samples (``round(rate * batch)``, drawn with the training generator so a run is
    reproducible) get the trigger stamped and the label ``target``; the rest pass unchanged.
    """
    if not 0 <= rate <= 1:
        raise InputError(f"poisoning rate must be in [0, 1], got {rate}")

    def transform(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        count = int(round(rate * len(x)))
        if count == 0:
            return x, y
        chosen = torch.randperm(len(x), generator=generator)[:count]
        # Copy so the caller's dataset tensors are never modified in place.
        x, y = x.clone(), y.clone()
        x[chosen] = trigger.stamp(x[chosen])
        y[chosen] = target
        return x, y

    return transform


@torch.no_grad()
def attack_success_rate(
    model: nn.Module,
    trigger: Trigger,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: int,
    batch_size: int = 1000,
) -> float:
    """Share of images whose true label is not ``target`` that the model assigns to ``target``
    once the trigger is stamped (the model is put in eval mode)."""
    keep = labels != target
    images = images[keep]
    if len(images) == 0:
        raise InputError("attack success rate needs images whose label differs from the target")
    model.eval()
    device = next((p.device for p in model.parameters()), images.device)
    hits = 0
    for start in range(0, len(images), batch_size):
        batch = trigger.stamp(images[start : start + batch_size].to(device))
        hits += (model(batch).argmax(1) == target).sum().item()
    return hits / len(images)
