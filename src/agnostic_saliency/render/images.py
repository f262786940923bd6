"""PNG maps and labelled grids (Pillow).

Pictures are given in the model's pixel range (``value_range``, [0, 1] by default, e.g. [0, 255]
for a model that takes raw bytes) and mapped to 8-bit grey or RGB here, the one place that knows
what a PNG needs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_unit(picture: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """``picture`` mapped from ``value_range`` to [0, 1] and clipped there."""
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value range must have high > low, got {value_range}")
    return ((picture.detach().float() - low) / (high - low)).clamp(0, 1)


def to_image(picture: torch.Tensor, upscale: int = 1, value_range: tuple[float, float] = (0.0, 1.0)) -> Image.Image:
    """(C, H, W) in ``value_range`` -> a grey or RGB PIL image, optionally enlarged with nearest
    pixels."""
    array = (to_unit(picture, value_range).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    if array.shape[0] == 1:
        image = Image.fromarray(array[0], mode="L")
    elif array.shape[0] == 3:
        image = Image.fromarray(array.transpose(1, 2, 0), mode="RGB")
    else:  # other channel counts: show their mean
        image = Image.fromarray(array.mean(0).astype(np.uint8), mode="L")
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
    return image


def save_png(picture: torch.Tensor, path: str | os.PathLike, upscale: int = 1,
             value_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """One picture (C, H, W) in ``value_range`` as a PNG."""
    to_image(picture, upscale, value_range).save(path, format="PNG")


def _upscale_for(height: int) -> int:
    return max(1, 112 // height) if height < 112 else 1


def save_grid(
    pictures: torch.Tensor,
    labels: Sequence[str],
    path: str | os.PathLike,
    columns: int = 5,
    captions: Sequence[str] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> None:
    """A grid of pictures (K, C, H, W) in ``value_range`` with a label (and optional caption)
    under each."""
    count = len(pictures)
    upscale = _upscale_for(pictures.shape[-2])
    tile_w, tile_h = pictures.shape[-1] * upscale, pictures.shape[-2] * upscale
    font = ImageFont.load_default()
    text_h = 14 * (2 if captions else 1) + 6
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    pad = 6
    width = columns * (tile_w + pad) + pad
    height = rows * (tile_h + text_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(count):
        row, col = divmod(i, columns)
        x, y = pad + col * (tile_w + pad), pad + row * (tile_h + text_h + pad)
        canvas.paste(to_image(pictures[i], upscale, value_range).convert("RGB"), (x, y))
        lines = [labels[i]] + ([captions[i]] if captions else [])
        for j, line in enumerate(lines):
            text = line if len(line) <= tile_w // 6 else line[: max(1, tile_w // 6 - 1)] + "…"
            draw.text((x, y + tile_h + 3 + 14 * j), text, fill="black", font=font)
    canvas.save(path, format="PNG")
