"""Folders of unlabeled images (any classes, any size), resized to the model's input."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass
class ImageFolder:
    """Images in [0, 1] as (N, C, H, W), with the count of files that could not be read."""

    images: torch.Tensor
    skipped: int
    paths: list[str]


def load_image_folder(
    directory: str | os.PathLike, shape: tuple[int, int, int], limit: int | None = None
) -> ImageFolder:
    """Read every image under ``directory`` (recursively), converted to ``shape`` = (C, H, W).

    Unreadable files are skipped with a warning and counted; a folder with no readable image
    is an error.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}")
    channels, height, width = shape
    if channels not in (1, 3):
        raise InputError(f"image folders need a 1- or 3-channel input shape, got {channels} channels")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    arrays, paths, unreadable = [], [], []
    for path in files:
        try:
            with warnings.catch_warnings():
                # Images above PIL.Image.MAX_IMAGE_PIXELS (a decompression bomb?) are skipped, not
                # decoded: PIL warns up to twice the limit and raises beyond it.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    image = image.convert("L" if channels == 1 else "RGB")
                    image = image.resize((width, height), Image.BILINEAR)
                    array = np.asarray(image, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as error:
            unreadable.append(f"{path}: {error}")
            continue
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
        paths.append(str(path))
    skipped = len(unreadable)
    if not arrays:  # one line: the first file's reason stands for the rest
        reason = f"; {unreadable[0]}" if unreadable else ""
        raise InputError(f"no readable image in {root} ({skipped} unreadable files skipped{reason})")
    for reason in unreadable:
        warnings.warn(f"skipping unreadable image {reason}", stacklevel=2)
    return ImageFolder(torch.from_numpy(np.stack(arrays)), skipped, paths)


def load_image_files(paths: list[str | os.PathLike], shape: tuple[int, int, int]) -> torch.Tensor:
    """The named image files as (N, C, H, W) in [0, 1], converted to ``shape``; a file that is
    missing or cannot be read is an error (it was asked for by name)."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise InputError(f"image files need a 1- or 3-channel input shape, got {channels} channels")
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise InputError(f"cannot read image {path}: {getattr(error, 'strerror', None) or error}") from None
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    if not arrays:
        raise InputError("no image given")
    return torch.from_numpy(np.stack(arrays))
